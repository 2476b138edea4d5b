"""Kinesis event-scoring consumer: decode, vectorize, one predict per batch, idempotent writes."""
