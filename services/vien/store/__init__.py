"""Vector store layer: one interface (`VectorStore`), two adapters (Qdrant Edge, qdrant-client)."""

from vien.store.base import (
    DENSE,
    SPARSE,
    CollectionInfo,
    CollectionMismatch,
    CollectionNotFound,
    Hit,
    Point,
    SearchFilter,
    SparseVector,
    StoreUnavailable,
    VectorStore,
)
from vien.store.factory import open_store

__all__ = [
    "DENSE",
    "SPARSE",
    "CollectionInfo",
    "CollectionMismatch",
    "CollectionNotFound",
    "Hit",
    "Point",
    "SearchFilter",
    "SparseVector",
    "StoreUnavailable",
    "VectorStore",
    "open_store",
]
