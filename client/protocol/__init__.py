"""The Kafka wire layer, sans-I/O, shared by the client and the broker."""
