"""doc-embedder: throughput-first embedding of documents (ONNX on CPU; vLLM over HTTP in production)."""
