"""Property-based fuzzing of every public RPC over real gRPC/HTTP, and of Kafka events into the ingest
processor (real Qdrant Edge store, real ONNX encoder).

Each answer must be OK or a well-formed client-error status, never INTERNAL/UNKNOWN (nor UNAVAILABLE:
that would mean a process went away), and every process must still be alive and SERVING afterwards.
Requests are sent as raw bytes through generic calls, so random bytes, mutated messages and invalid
UTF-8 in string fields reach the servers exactly as written.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vien.store.factory import open_store
from vien.v1 import embedder_pb2, router_pb2, search_pb2, store_pb2
from vien.v1.documents_pb2 import DocumentEvent
from vien_tools.cli.supervisor import free_port, grpc_serving

# Well-formed answers to a bad or unlucky request. DEADLINE_EXCEEDED only on a slow, shared machine.
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED,
           grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAUTHENTICATED,
           grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.DEADLINE_EXCEEDED}
SCALE = float(os.environ.get("VIEN_FUZZ_SCALE", "1"))  # more (or fewer) examples everywhere


def fuzz(examples: int) -> settings:
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


TIMEOUT = 60.0

# ---- strategies -------------------------------------------------------------------------------------

SPECIAL_TEXTS = ["", " ", "\x00", "\n\t", "🙂" * 50, "\u202e\u0301\u200b", "a" * 100_001, "xin chào " * 3000,
                 "{text}", "%s%n", "\ufeff", "\U0010ffff"]
texts = st.one_of(st.text(max_size=200), st.sampled_from(SPECIAL_TEXTS))
text_lists = st.lists(texts, max_size=6) | st.just([""] * 300) | st.just(["x"] * 257)
u32 = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1, 383, 384, 385, 32]))
floats = st.floats(allow_nan=True, allow_infinity=True, width=32)
names = st.one_of(st.text(max_size=40), st.sampled_from(["", "e5-small", "vien_e5_small", "demo", "../x", "a" * 300]))
langs = st.one_of(st.text(max_size=8), st.sampled_from(["", "vi", "en", "other", "fr"]))


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def raw_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field written by hand: lets invalid UTF-8 into a string field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def raw_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


invalid_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"ok\x80"])


def mutated(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Valid serialized messages with bytes flipped, cut or inserted."""
    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        b = bytearray(draw(valid))
        for _ in range(draw(st.integers(1, 4))):
            op = draw(st.sampled_from(["flip", "cut", "insert"]))
            i = draw(st.integers(0, len(b)))
            if op == "flip" and i < len(b):
                b[i] ^= draw(st.integers(1, 255))
            elif op == "cut":
                del b[i:i + draw(st.integers(1, 8))]
            else:
                b[i:i] = draw(st.binary(min_size=1, max_size=8))
        return bytes(b)
    return mutate()


def bodies(messages: st.SearchStrategy[bytes], utf8_fields: tuple[int, ...]) -> st.SearchStrategy[bytes]:
    bad_utf8 = st.tuples(st.sampled_from(utf8_fields), invalid_utf8, messages).map(
        lambda t: t[2] + raw_field(t[0], t[1]))
    negative = st.tuples(st.integers(1, 12), st.integers(-(2**63), -1)).map(lambda t: raw_varint(*t))
    return st.one_of(messages, messages, messages, st.binary(max_size=512), mutated(messages), bad_utf8, negative)


def ser(strategy: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    return strategy.map(lambda m: m.SerializeToString())


embed_reqs = ser(st.builds(router_pb2.EmbedRequest, texts=text_lists, kind=st.integers(0, 5), profile=names,
                           dimensions=u32, strict=st.booleans(), lang=langs, bypass_cache=st.booleans()))
encode_reqs = ser(st.builds(embedder_pb2.EncodeRequest, texts=text_lists, profile=names | st.just("e5-small"),
                            dimensions=u32, strict=st.booleans(), bypass_cache=st.booleans()))
detect_reqs = ser(st.builds(router_pb2.DetectLanguageRequest, texts=text_lists))
search_reqs = ser(st.builds(search_pb2.SearchRequest, query=texts, top_k=u32, tenant=names | st.just("demo"),
                            lang=langs, metadata_filter=st.dictionaries(st.text(max_size=10), st.text(max_size=10),
                                                                        max_size=3),
                            profile=names, mode=st.integers(0, 5), score_threshold=floats, dimensions=u32))


@st.composite
def store_filter(draw: st.DrawFn) -> store_pb2.StoreFilter:
    return store_pb2.StoreFilter(tenant=draw(names), lang=draw(langs), doc_id=draw(names),
                                 metadata=draw(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3)))


def vec_bytes() -> st.SearchStrategy[bytes]:
    finite = st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=40)
    nans = st.lists(floats, max_size=40)
    return st.one_of(st.binary(max_size=70), (finite | nans).map(
        lambda xs: b"".join(struct_pack(x) for x in xs)))


def struct_pack(x: float) -> bytes:
    import struct

    return struct.pack("<f", x)


sparse = st.builds(store_pb2.StoreSparseVector, indices=st.lists(st.integers(0, 2**32 - 1), max_size=6),
                   values=st.lists(floats, max_size=6))
coll = st.one_of(st.sampled_from(["fuzz_a", "fuzz_b", "", "../etc", "a" * 200, "x y"]), st.text(max_size=20))
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
payload_values = st.one_of(st.text(max_size=20), st.integers(-10, 10), st.none(), st.booleans(), floats.map(float),
                           non_finite, st.lists(non_finite, min_size=1, max_size=2),
                           st.lists(floats.map(float), max_size=3),
                           st.dictionaries(st.text(max_size=5), floats.map(float), max_size=2))
payloads = st.dictionaries(st.text(max_size=8), payload_values, max_size=4).map(lambda d: _struct(d))


def _struct(d: dict) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(d)
    return s


points = st.builds(store_pb2.StorePoint, id=st.one_of(st.uuids().map(str), st.text(max_size=20)), vector=vec_bytes(),
                   payload=payloads, sparse=sparse)
# Points that pass the cheap checks (a UUID, 4 float32s for the 4-d collection fuzz_a), so that the
# payload, the sparse vector and the engine itself get exercised too.
four_floats = st.lists(floats, min_size=4, max_size=4).map(lambda xs: b"".join(struct_pack(x) for x in xs))
good_points = st.builds(store_pb2.StorePoint, id=st.uuids().map(str), vector=four_floats, payload=payloads,
                        sparse=sparse)
STORE = {
    "EnsureCollection": ser(st.builds(store_pb2.EnsureCollectionRequest, collection=coll,
                                      dims=st.one_of(st.sampled_from([0, 1, 4, 8]), u32), sparse=st.booleans())),
    "Upsert": ser(st.builds(store_pb2.UpsertRequest, collection=coll | st.just("fuzz_a"),
                            points=st.lists(good_points | points, min_size=1, max_size=4))),
    "Delete": ser(st.builds(store_pb2.DeleteRequest, collection=coll, ids=st.lists(st.text(max_size=40), max_size=3),
                            tenant=names, doc_id=names)),
    "DocChunks": ser(st.builds(store_pb2.DocChunksRequest, collection=coll, tenant=names, doc_id=names)),
    "Query": ser(st.builds(store_pb2.QueryRequest, collection=coll | st.just("fuzz_a"), mode=st.integers(0, 4),
                           vector=vec_bytes() | four_floats,
                           sparse=sparse, top_k=u32, filter=store_filter(), prefetch_k=u32)),
    "Count": ser(st.builds(store_pb2.CountRequest, collection=coll, filter=store_filter())),
    "ListCollections": ser(st.just(store_pb2.ListCollectionsRequest())),
    "Optimize": ser(st.builds(store_pb2.OptimizeRequest, collection=coll)),
}

# ---- calls ------------------------------------------------------------------------------------------


def unary(ch: grpc.Channel, method: str, body: bytes) -> grpc.StatusCode:
    try:
        ch.unary_unary(method)(body, timeout=TIMEOUT)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return _checked(exc, method)


def stream(ch: grpc.Channel, method: str, bodies_: list[bytes]) -> grpc.StatusCode:
    try:
        for _ in ch.stream_stream(method)(iter(bodies_), timeout=TIMEOUT):
            pass
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return _checked(exc, method)


def _checked(exc: grpc.RpcError, method: str) -> grpc.StatusCode:
    code = exc.code()
    assert code in ALLOWED, f"{method}: {code.name}: {exc.details()}"
    assert exc.details(), f"{method}: {code.name} without a message"
    return code


def _restarts(log_dir: Path) -> dict[str, int]:
    """'listening on' lines per service log: a crash and restart by the supervisor adds one."""
    return {p.stem: p.read_text(errors="replace").count("listening on") for p in log_dir.glob("*.log")}


@pytest.fixture(scope="module")
def fuzz_mesh(mesh) -> Iterator[dict[str, str]]:
    before = _restarts(mesh.log_dir)
    yield mesh.addrs
    assert mesh.proc.poll() is None, "vien up exited"
    for name in ("router", "query-embedder", "doc-embedder", "search", "store", "ingest"):
        with grpc.insecure_channel(mesh.addrs[name]) as ch:
            r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert r.status == health_pb2.HealthCheckResponse.SERVING, name
    assert _restarts(mesh.log_dir) == before, "a service restarted during fuzzing"


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A store service of its own (Qdrant Edge in tmp): fuzzing must not touch the shared mesh's data."""
    tmp = tmp_path_factory.mktemp("fuzz-store")
    port = free_port()
    env = {**os.environ, "VIEN_STORE_BACKEND": f"edge:{tmp / 'store'}", "VIEN_TRACING": "0"}
    log = tmp / "store.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "vien_tools", "serve", "store", "--port", str(port)], env=env,
                                stdout=f, stderr=f)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not grpc_serving(address):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"store did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    with grpc.insecure_channel(address) as ch:
        ch.unary_unary("/vien.v1.VectorStore/EnsureCollection")(
            store_pb2.EnsureCollectionRequest(collection="fuzz_a", dims=4, sparse=True).SerializeToString(), timeout=30)
    yield address
    assert proc.poll() is None, f"the store died: {log.read_text()[-3000:]}"
    assert grpc_serving(address, timeout=10)
    assert "unhandled error" not in log.read_text()
    proc.terminate()
    assert proc.wait(timeout=30) == 0


# ---- the RPCs ---------------------------------------------------------------------------------------


ROUTER = {"Embed": bodies(embed_reqs, (1, 3, 6)), "DetectLanguage": bodies(detect_reqs, (1,)),
          "ListProfiles": st.one_of(st.just(b""), st.binary(max_size=64))}


@pytest.mark.parametrize("method", sorted(ROUTER))
@fuzz(60)
@given(data=st.data())
def test_router_unary_rpcs(fuzz_mesh, method, data) -> None:
    with grpc.insecure_channel(fuzz_mesh["router"]) as ch:
        unary(ch, f"/vien.v1.Router/{method}", data.draw(ROUTER[method]))


@pytest.mark.parametrize("method", ["/vien.v1.Router/EmbedStream", "/vien.v1.DocEmbedder/EncodeStream"])
@fuzz(40)
@given(data=st.data())
def test_streaming_rpcs(fuzz_mesh, method, data) -> None:
    reqs = bodies(embed_reqs, (1, 3, 6)) if "Router" in method else bodies(encode_reqs, (1, 2))
    with grpc.insecure_channel(fuzz_mesh["router" if "Router" in method else "doc-embedder"]) as ch:
        stream(ch, method, data.draw(st.lists(reqs, max_size=3)))


@pytest.mark.parametrize("service", ["query-embedder", "doc-embedder"])
@fuzz(60)
@given(body=bodies(encode_reqs, (1, 2)))
def test_embedder_encode(fuzz_mesh, service, body) -> None:
    name = "QueryEmbedder" if service == "query-embedder" else "DocEmbedder"
    with grpc.insecure_channel(fuzz_mesh[service]) as ch:
        unary(ch, f"/vien.v1.{name}/Encode", body)


@fuzz(150)
@given(body=bodies(search_reqs, (1, 3, 4, 6)))
def test_search_rpc(fuzz_mesh, body) -> None:
    with grpc.insecure_channel(fuzz_mesh["search"]) as ch:
        unary(ch, "/vien.v1.Search/Search", body)


@pytest.mark.parametrize("method", sorted(STORE))
@fuzz(50)
@given(data=st.data())
def test_store_rpcs(fuzz_store, method, data) -> None:
    with grpc.insecure_channel(fuzz_store) as ch:
        unary(ch, f"/vien.v1.VectorStore/{method}", data.draw(bodies(STORE[method], (1,))))


def test_oversize_messages_are_refused_by_every_grpc_service(fuzz_mesh, fuzz_store) -> None:
    """Every server runs with run_app's size limit (16 MiB by default): one byte over is RESOURCE_EXHAUSTED."""
    over = raw_field(1, b"a" * (16 * 1024 * 1024))
    targets = {"router": "/vien.v1.Router/Embed", "query-embedder": "/vien.v1.QueryEmbedder/Encode",
               "doc-embedder": "/vien.v1.DocEmbedder/Encode", "search": "/vien.v1.Search/Search"}
    for name, method in [*targets.items(), ("store", "/vien.v1.VectorStore/Upsert")]:
        address = fuzz_store if name == "store" else fuzz_mesh[name]
        with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as ch, \
                pytest.raises(grpc.RpcError) as err:
            ch.unary_unary(method)(over, timeout=TIMEOUT)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (name, err.value.details())


# ---- the HTTP gateway -------------------------------------------------------------------------------

json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                     st.text(max_size=30)),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                        max_size=4), max_leaves=12)
embedding_bodies = st.fixed_dictionaries(
    {"model": st.one_of(st.sampled_from(["e5-small", "text-embedding-3-small", ""]), json_values)},
    optional={"input": st.one_of(texts, text_lists, json_values), "dimensions": st.one_of(u32, json_values,
                                                                                            st.integers()),
              "encoding_format": st.one_of(st.sampled_from(["float", "base64"]), json_values),
              "user": json_values, "vien_kind": st.one_of(st.sampled_from(["query", "document"]), json_values),
              "vien_truncate": json_values, "extra": json_values})


header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=40)
extra_headers = st.dictionaries(st.sampled_from(["authorization", "x-stainless-read-timeout", "x-request-timeout",
                                                 "traceparent"]), header_text, max_size=2)


def _post(address: str, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> tuple[int, bytes]:
    import http.client

    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request("POST", "/v1/embeddings", body=body, headers={"content-type": content_type, **(extra or {})})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


@fuzz(150)
@given(body=st.one_of(embedding_bodies.map(lambda d: json.dumps(d).encode()), st.binary(max_size=300),
                      st.sampled_from([b"", b"{", b"null", b"[]", b'{"model": "e5-small", "input": "x", '
                                       b'"dimensions": NaN}', b'{"model":"e5-small","input":"\xff\xfe"}',
                                       b'{"model":"e5-small","input":"\\ud800"}',
                                       b'{"model":"e5-small","input":"x","dimensions":1e400}']),
                      mutated(embedding_bodies.map(lambda d: json.dumps(d).encode()))),
       content_type=st.sampled_from(["application/json", "text/plain", ""]), extra=extra_headers)
def test_http_embeddings(fuzz_mesh, body, content_type, extra) -> None:
    status, raw = _post(fuzz_mesh["http"], body, content_type, extra)
    assert status in (200, 400, 404, 413, 422, 429, 504), (status, raw[:500])
    answer = json.loads(raw)
    if status == 200:
        assert answer["object"] == "list" and all(
            all(math.isfinite(x) for x in d["embedding"]) for d in answer["data"] if isinstance(d["embedding"], list))
    else:
        assert set(answer["error"]) == {"message", "type", "param", "code"} and answer["error"]["message"]


@fuzz(80)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
       path=st.one_of(st.sampled_from(["/v1/embeddings", "/embeddings", "/v1/models", "/v1/models/e5-small",
                                       "/v1/models/", "/healthz", "/", "/v1/models/%00", "/v1//embeddings"]),
                      st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
                      .map(lambda p: "/" + p.replace("#", "").replace("?", ""))),
       headers=extra_headers)
def test_http_routes_and_headers(fuzz_mesh, method, path, headers) -> None:
    import http.client

    host, port = fuzz_mesh["http"].rsplit(":", 1)
    body = json.dumps({"model": "e5-small", "input": "xin chào"}).encode() if method == "POST" else None
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        status, raw = r.status, r.read()
    finally:
        conn.close()
    assert status < 500 or status in (503, 504), (method, path, headers, status, raw[:300])
    answer = json.loads(raw)
    assert status == 200 or answer.get("error", {}).get("message") or answer.get("status"), answer


@fuzz(60)
@given(extra=st.dictionaries(st.sampled_from(["authorization", "x-stainless-read-timeout", "x-request-timeout",
                                              "traceparent", "tracestate"]), header_text, min_size=1, max_size=3))
def test_http_headers_of_a_valid_request(fuzz_mesh, extra) -> None:
    body = json.dumps({"model": "e5-small", "input": "xin chào", "encoding_format": "float"}).encode()
    status, raw = _post(fuzz_mesh["http"], body, "application/json", extra)
    assert status in (200, 400, 429, 504), (extra, status, raw[:300])


# ---- Kafka events into the ingest processor ----------------------------------------------------------


@pytest.fixture(scope="module")
def processor(settings, tmp_path_factory):
    from test_ingest_processor import LocalDocEncoder

    from vien.text.langid import detect
    from vien_ingest.grpc_app import token_counters
    from vien_ingest.processor import IngestProcessor

    store = open_store(f"edge:{tmp_path_factory.mktemp('fuzz-edge')}")
    proc = IngestProcessor(settings.config, store, LocalDocEncoder(settings), token_counters(settings.config, settings),
                           detect, overlap_tokens=16)
    yield proc
    store.close()


event_texts = st.one_of(st.text(max_size=400), st.sampled_from(["", " ", "\x00", "🙂" * 100, "a" * 1_000_001]))
events = st.builds(DocumentEvent, op=st.integers(0, 4), doc_id=names, version=st.integers(0, 2**64 - 1),
                   tenant=names | st.just("t1"), lang=langs, title=st.text(max_size=40), text=event_texts,
                   metadata=payloads, event_time_ms=st.integers(-(2**63), 2**63 - 1), profile=names)
valid_events = st.builds(DocumentEvent, op=st.sampled_from([1, 2]), doc_id=st.sampled_from(["d1", "d2", "d3"]),
                         version=st.integers(0, 5), tenant=st.sampled_from(["t1", "t2"]),
                         text=st.text(min_size=1, max_size=100), lang=st.sampled_from(["", "vi", "en"]),
                         metadata=payloads)
record_values = st.one_of(ser(events), ser(valid_events), st.binary(max_size=300), mutated(ser(valid_events)),
                          st.none(), st.tuples(st.sampled_from([2, 4, 5, 6, 7, 10]), invalid_utf8, ser(valid_events))
                          .map(lambda t: t[2] + raw_field(t[0], t[1])))


@fuzz(100)
@given(values=st.lists(record_values, min_size=1, max_size=4),
       headers=st.lists(st.tuples(st.text(max_size=12), st.one_of(st.none(), st.binary(max_size=40))), max_size=3))
def test_ingest_processor_events(processor, values, headers) -> None:
    from vien_ingest.processor import Record

    records = [Record("vien.documents", 0, i, v, headers) for i, v in enumerate(values)]
    out = asyncio.run(processor.process(records))  # nothing may escape
    for rec, reason, code in out.dead:
        assert reason and code and rec in records
    # every record is accounted for exactly once: applied, skipped as stale/unchanged, or dead-lettered
    assert out.upserted_docs + out.deleted_docs + out.stale + out.unchanged + len(out.dead) == len(records)


# ---- the bugs fuzzing found, pinned as plain regressions ---------------------------------------------


def test_regressions_found_by_fuzzing() -> None:
    from vien.documents.events import PoisonEvent, decode_event
    from vien.runtime.errors import InvalidArgument
    from vien.store import wire

    # a vector whose byte length is not a multiple of 4 (store Query/Upsert answered INTERNAL)
    with pytest.raises(InvalidArgument, match=r"^points\[2\]\.vector: 5 bytes"):
        wire.point_from_pb(store_pb2.StorePoint(id="x", vector=b"12345"), "points[2]")
    # NaN/Infinity in a point payload (store Upsert answered INTERNAL)
    nan_payload = struct_pb2.Struct()
    nan_payload.update({"score": math.nan})
    with pytest.raises(InvalidArgument, match=r"^points\[0\]\.payload: not JSON"):
        wire.point_from_pb(store_pb2.StorePoint(id="x", vector=b"\0" * 16, payload=nan_payload))
    # NaN/Infinity in event metadata: raised inside the ingest batch, the worker exited and, restarted,
    # met the same event again: one event stopped ingestion for good. Now it is dead-lettered.
    meta = struct_pb2.Struct()
    meta.update({"ok": 1, "nested": {"list": [1.0, math.inf]}})
    ev = DocumentEvent(op=DocumentEvent.OP_UPSERT, doc_id="d", tenant="t", text="x", metadata=meta)
    with pytest.raises(PoisonEvent, match=r"metadata\.nested\.list\[1\]: NaN and Infinity") as err:
        decode_event(ev.SerializeToString())
    assert err.value.code == "metadata_not_finite"
