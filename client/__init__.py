"""Raftka's asyncio Kafka client."""
