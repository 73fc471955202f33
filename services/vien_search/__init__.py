"""search: query -> router (QUERY embedding, language routing) -> vector store, tenant-scoped."""
