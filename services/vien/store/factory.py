"""`open_store(spec)`: the vector store named by a settings string.

- ``edge:/path/to/dir``       Qdrant Edge in this process, persistent under that directory (embedded default)
- ``qdrant:http://host:6334`` a Qdrant server over gRPC (``qdrant:https://…`` for TLS; api key from
  the ``api_key`` argument, e.g. read by the caller from VIEN_QDRANT_API_KEY)
- ``qdrant-rest:http://host:6333`` the same over REST
- ``memory``                  qdrant-client's local mode in memory (tests, small data)
- ``remote:host:port``        the local store service (vien.v1.VectorStore) that owns Edge shards under `vien up`
"""

from __future__ import annotations

from pathlib import Path

from vien.runtime import env
from vien.runtime.errors import InvalidArgument
from vien.store.base import VectorStore


def open_store(spec: str, api_key: str | None = None) -> VectorStore:
    if api_key is None:
        api_key = env.get("VIEN_QDRANT_API_KEY") or None  # from a Secret in the Helm chart
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "remote" and rest:
        from vien.store.remote import RemoteStore

        return RemoteStore(rest)
    if kind == "memory" and not rest:
        from vien.store.qdrant import QdrantStore

        return QdrantStore(location=":memory:")
    if kind == "edge" and rest:
        from vien.store.edge import EdgeStore

        return EdgeStore(Path(rest).expanduser())
    if kind in ("qdrant", "qdrant-rest") and rest:
        from vien.store.qdrant import QdrantStore

        return QdrantStore(url=rest, api_key=api_key, prefer_grpc=kind == "qdrant")
    raise InvalidArgument(
        "store",
        f"{spec!r}: expected 'remote:host:port', 'edge:/path', 'qdrant:http://host:6334', "
        "'qdrant-rest:http://host:6333' or 'memory'",
    )
