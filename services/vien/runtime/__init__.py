"""Shared runtime of every vien service: configuration, logging, telemetry, gRPC bootstrap."""
