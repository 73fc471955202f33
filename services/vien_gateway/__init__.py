"""OpenAI-compatible HTTP gateway in front of the router (`POST /v1/embeddings`, `GET /v1/models`)."""
