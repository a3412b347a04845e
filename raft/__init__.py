"""Raftka's Raft core: a pure, deterministic consensus state machine (no I/O, no clocks)."""
