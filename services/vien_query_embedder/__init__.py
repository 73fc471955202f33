"""query-embedder: latency-first embedding of search queries (ONNX, micro-batching, Redis cache)."""
