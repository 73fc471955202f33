"""ingest: Kafka consumer turning document events into vector-store points, at-least-once."""
