"""store: the local vector store service (Qdrant Edge in one owning process), for `vien up` only."""
