"""Raftka's broker: the asyncio runtime that serves the Kafka protocol on Raft-backed logs."""
