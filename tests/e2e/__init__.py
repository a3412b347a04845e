"""End-to-end tests: real broker processes on loopback, driven by real Kafka clients."""
