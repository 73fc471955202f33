"""Conversions between the store's dataclasses and the vien.v1 store protobuf messages.

Payloads travel as JSON bytes (`payload_json`, orjson): measured 1.2 ms for the Struct round trip of 10
hits with chunk-sized texts against 0.06 ms as JSON (bench/RESULTS.md, store hop). The Struct fields
stay readable for older peers."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from google.protobuf import json_format, struct_pb2

from vien.runtime.errors import InvalidArgument
from vien.store.base import Hit, Point, SearchFilter, SparseVector
from vien.v1 import store_pb2

# Struct carries every number as a double; these payload fields are integers.
INT_FIELDS = ("chunk_index", "version", "n_chunks")


def struct_of(payload: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(payload)
    return s


def dict_of(s: struct_pb2.Struct) -> dict[str, Any]:
    d: dict[str, Any] = json_format.MessageToDict(s)
    for k in INT_FIELDS:
        if isinstance(d.get(k), float):
            d[k] = int(d[k])
    return d


def sparse_to_pb(sp: SparseVector) -> store_pb2.StoreSparseVector:
    return store_pb2.StoreSparseVector(indices=sp.indices, values=sp.values)


def sparse_from_pb(msg: store_pb2.StoreSparseVector, present: bool) -> SparseVector | None:
    if not present:
        return None
    return SparseVector(list(msg.indices), list(msg.values))


def payload_bytes(payload: dict[str, Any], field: str = "payload") -> bytes:
    try:
        return orjson.dumps(payload)
    except TypeError as exc:
        raise InvalidArgument(field, f"not JSON-representable ({exc})") from None


def payload_of(data: bytes, field: str = "payload") -> dict[str, Any]:
    try:
        d = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(field, f"not valid JSON ({exc})") from None
    if not isinstance(d, dict):
        raise InvalidArgument(field, "must be a JSON object")
    return d


def point_to_pb(p: Point) -> store_pb2.StorePoint:
    msg = store_pb2.StorePoint(id=p.id, vector=np.asarray(p.vector, "<f4").tobytes(),
                               payload_json=payload_bytes(p.payload))
    if p.sparse is not None:
        msg.sparse.CopyFrom(sparse_to_pb(p.sparse))
    return msg


def vector_from_bytes(data: bytes, field: str = "vector") -> np.ndarray:
    """Packed little-endian float32; a length that is not a multiple of 4 is the caller's mistake."""
    if len(data) % 4:
        raise InvalidArgument(field, f"{len(data)} bytes is not a whole number of float32 values (4 bytes each)")
    return np.frombuffer(data, "<f4")


def point_from_pb(msg: store_pb2.StorePoint, field: str = "points[0]") -> Point:
    vector = vector_from_bytes(msg.vector, f"{field}.vector")
    if msg.payload_json:
        return Point(msg.id, vector, payload_of(msg.payload_json, f"{field}.payload_json"),
                     sparse_from_pb(msg.sparse, msg.HasField("sparse")))
    try:
        payload = dict_of(msg.payload)
    except ValueError as exc:  # NaN/Infinity numbers: a payload must be JSON
        raise InvalidArgument(f"{field}.payload", f"not JSON-representable ({exc})") from None
    return Point(msg.id, vector, payload, sparse_from_pb(msg.sparse, msg.HasField("sparse")))


def filter_to_pb(f: SearchFilter) -> store_pb2.StoreFilter:
    return store_pb2.StoreFilter(tenant=f.tenant or "", lang=f.lang or "", metadata=f.metadata, doc_id=f.doc_id or "")


def filter_from_pb(msg: store_pb2.StoreFilter, present: bool) -> SearchFilter | None:
    if not present:
        return None
    return SearchFilter(tenant=msg.tenant or None, lang=msg.lang or None, metadata=dict(msg.metadata),
                        doc_id=msg.doc_id or None)


def hits_to_pb(hits: list[Hit], as_json: bool = False) -> store_pb2.HitsResponse:
    if as_json:
        return store_pb2.HitsResponse(hits=[store_pb2.StoreHit(id=h.id, score=h.score,
                                                               payload_json=orjson.dumps(h.payload)) for h in hits])
    return store_pb2.HitsResponse(hits=[store_pb2.StoreHit(id=h.id, score=h.score, payload=struct_of(h.payload))
                                        for h in hits])


def hits_from_pb(msg: store_pb2.HitsResponse) -> list[Hit]:
    return [Hit(h.id, h.score, orjson.loads(h.payload_json) if h.payload_json else dict_of(h.payload))
            for h in msg.hits]
