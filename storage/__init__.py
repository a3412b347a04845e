"""Raftka's storage engine: segmented, write-ahead-logged partition logs."""
