"""Pure pieces of the ingest worker: event decoding/validation, chunking, DLQ records, point ids.

No Kafka client, no network: everything here is testable on its own.
"""
