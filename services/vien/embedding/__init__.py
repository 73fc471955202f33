"""Embedding logic shared by the query and document embedders (no transport here)."""
