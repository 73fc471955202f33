"""API keys and tenant isolation over real gRPC and HTTP.

The shared `mesh` (open mode) provides the embedders, the store, Kafka and ingest; a keyed router, a
keyed search and a keyed HTTP gateway (`vien serve ...` subprocesses with VIEN_API_KEYS) are started in
front of them, so only the edges differ from production. Documents of two tenants go in through Kafka.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vien.runtime.auth import ApiKeys, Caller, caller_tenant, set_caller
from vien.runtime.config import ConfigError, VienConfig, default_config_path, load_config
from vien.runtime.errors import PermissionDenied, Unauthenticated
from vien.store.remote import RemoteStore
from vien.v1 import common_pb2, router_pb2, router_pb2_grpc, search_pb2, search_pb2_grpc
from vien.v1.documents_pb2 import DocumentEvent
from vien_tools.cli.documents import stats
from vien_tools.cli.supervisor import free_port, grpc_serving, http_ready

ALPHA, BETA, GAMMA = "sec-alpha", "sec-beta", "sec-gamma"
KEY_A, KEY_B, KEY_G = "sk-alpha-7f3c91d2", "sk-beta-52be0a44", "sk-gamma-0c1d9e77"
WRONG_KEY = "sk-wrong-e3b0c44298fc1c14"
COLL = "vien_e5_small"
LIMIT = 1 << 20  # VIEN_MAX_MESSAGE_BYTES of the keyed services: 1 MiB


def bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


# ---- plain logic ------------------------------------------------------------------------------------


def test_keys_map_to_tenants_from_config_env_and_the_older_openai_section() -> None:
    raw = yaml.safe_load(default_config_path().read_text())
    cfg = VienConfig.model_validate({**raw, "auth": {"api_keys": [{"tenant": "acme", "key_env": "ACME_K"}]},
                                     "openai": {"api_keys": [{"tenant": "old", "key": "sk-old"}]}})
    keys = ApiKeys.load(cfg, {"ACME_K": "sk-acme", "VIEN_API_KEYS": "beta:sk-beta,sk-bare"})
    assert len(keys) == 4
    assert [keys.authenticate(f"Bearer {k}") for k in ("sk-acme", "sk-old", "sk-beta", "sk-bare")] == \
        ["acme", "old", "beta", "default"]
    assert keys.authenticate("bearer   sk-acme ") == "acme"  # scheme is case-insensitive
    for bad, what in ((None, "missing API key"), ("", "missing API key"), ("Basic sk-acme", "malformed"),
                      ("Bearer", "malformed"), ("Bearer sk-acm", "invalid API key"), ("sk-acme", "malformed")):
        with pytest.raises(Unauthenticated, match=what) as err:
            keys.authenticate(bad)
        assert "sk-acm" not in err.value.message
    assert ApiKeys.load(load_config(), {}).authenticate(None) == ""  # the shipped config: open mode
    with pytest.raises(ConfigError, match=r"auth.api_keys\[0\].key_env: environment variable ACME_K"):
        ApiKeys.load(cfg, {})
    with pytest.raises(ConfigError, match="tenant: 'bad/tenant' must match"):
        ApiKeys([("bad/tenant", "k")])


def test_the_callers_tenant_scopes_requests() -> None:
    set_caller(None)
    assert caller_tenant("anyone") == "anyone"  # open mode: the request says
    set_caller(Caller(ALPHA, f"Bearer {KEY_A}"))
    try:
        assert caller_tenant("") == ALPHA and caller_tenant(ALPHA) == ALPHA
        with pytest.raises(PermissionDenied) as err:
            caller_tenant(BETA)
        assert err.value.message.startswith("tenant: ") and err.value.code == grpc.StatusCode.PERMISSION_DENIED
    finally:
        set_caller(None)


# ---- keyed edges in front of the shared mesh --------------------------------------------------------


@dataclass
class Edges:
    router: str
    search: str
    http: str
    logs: dict[str, Path]


def _start(name: str, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "vien_tools", *argv], env=env, stdout=f, stderr=f)


def _wait(ready, address: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready(address):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{log.name} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def edges(mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edges]:
    tmp = tmp_path_factory.mktemp("keyed-edges")
    cfg = yaml.safe_load(default_config_path().read_text())
    cfg["auth"] = {"api_keys": [{"tenant": ALPHA, "key_env": "TEST_ALPHA_KEY"}]}
    (tmp / "profiles.yaml").write_text(yaml.safe_dump(cfg))
    ports = {n: free_port() for n in ("router", "search", "http")}
    addr = {n: f"127.0.0.1:{p}" for n, p in ports.items()}
    base = {**os.environ, "VIEN_CONFIG": str(tmp / "profiles.yaml"), "TEST_ALPHA_KEY": KEY_A,
            "VIEN_API_KEYS": f"{BETA}:{KEY_B}", "VIEN_TRACING": "0", "VIEN_MAX_MESSAGE_BYTES": str(LIMIT),
            "VIEN_QUERY_EMBEDDER_ADDR": mesh.addrs["query-embedder"],
            "VIEN_DOC_EMBEDDER_ADDR": mesh.addrs["doc-embedder"], "VIEN_ROUTER_ADDR": addr["router"],
            "VIEN_VECTOR_STORE": f"remote:{mesh.addrs['store']}"}
    base.pop("VIEN_REDIS_URL", None)
    logs = {n: tmp / f"{n}.log" for n in addr}
    procs = [_start("router", ["serve", "router", "--port", str(ports["router"])], base, logs["router"]),
             _start("search", ["serve", "search", "--port", str(ports["search"])], base, logs["search"]),
             # The gateway also knows gamma, whom the router does not: proves the router checks the caller.
             _start("http", ["serve", "gateway", "--port", str(ports["http"])],
                    {**base, "VIEN_API_KEYS": f"{BETA}:{KEY_B},{GAMMA}:{KEY_G}"}, logs["http"])]
    try:
        _wait(grpc_serving, addr["router"], procs[0], logs["router"])
        _wait(grpc_serving, addr["search"], procs[1], logs["search"])
        _wait(http_ready, addr["http"], procs[2], logs["http"])
        yield Edges(addr["router"], addr["search"], addr["http"], logs)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            assert p.wait(timeout=30) == 0, "a keyed edge did not exit cleanly"


async def _publish(kafka: str, events: list[DocumentEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka)
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait("vien.documents", e.SerializeToString(),
                                         key=f"{e.tenant}/{e.doc_id}".encode())
    finally:
        await producer.stop()


def _settle(mesh, pred, what: str, timeout: float = 120.0) -> None:
    store_spec = f"remote:{mesh.addrs['store']}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = stats(store_spec, mesh.addrs["kafka"], "vien.documents", "vien.documents.dlq", "vien-ingest")
        if st["lag"] == 0 and pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


DOCS = {
    (ALPHA, "shared"): "Alpha's roadmap: the Hanoi office opens a durian tasting room in March.",
    (BETA, "shared"): "Beta's payroll: salaries are paid on the fifth of each month by bank transfer.",
    (BETA, "beta-only"): "Beta's secret recipe: phở bò with star anise, cinnamon and charred ginger.",
}


@pytest.fixture(scope="module")
def two_tenants(mesh, edges) -> RemoteStore:
    asyncio.run(_publish(mesh.addrs["kafka"], [
        DocumentEvent(op=DocumentEvent.OP_UPSERT, tenant=t, doc_id=d, version=1, lang="en", text=text)
        for (t, d), text in DOCS.items()]))
    store = RemoteStore(mesh.addrs["store"])
    _settle(mesh, lambda: all(store.doc_chunks(COLL, t, d) for t, d in DOCS), "both tenants' documents")
    yield store
    store.close()


def _search(address: str, key: str | None, query: str, tenant: str = "", **kw) -> search_pb2.SearchResponse:
    with grpc.insecure_channel(address) as ch:
        return search_pb2_grpc.SearchStub(ch).Search(
            search_pb2.SearchRequest(query=query, tenant=tenant, top_k=20, **kw), timeout=30,
            metadata=bearer(key) if key else None)


def _embed(address: str, key: str | None) -> router_pb2.EmbedResponse:
    with grpc.insecure_channel(address) as ch:
        return router_pb2_grpc.RouterStub(ch).Embed(router_pb2.EmbedRequest(texts=["xin chào"]), timeout=30,
                                                    metadata=bearer(key) if key else None)


def test_edges_refuse_calls_without_a_valid_key_and_never_log_it(edges) -> None:
    for call in (lambda k: _embed(edges.router, k), lambda k: _search(edges.search, k, "payroll")):
        for key, message in ((None, "missing API key"), (WRONG_KEY, "invalid API key")):
            with pytest.raises(grpc.RpcError) as err:
                call(key)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value.details()
            assert message in err.value.details() and WRONG_KEY not in err.value.details()
    with grpc.insecure_channel(edges.router) as ch:  # a bidi stream is checked too
        stream = router_pb2_grpc.RouterStub(ch).EmbedStream(iter([router_pb2.EmbedRequest(texts=["x"])]), timeout=30,
                                                            metadata=bearer(WRONG_KEY))
        with pytest.raises(grpc.RpcError) as err:
            list(stream)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # health and reflection stay open
        h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert h.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for r in refl for s in r.list_services_response.service}
        assert "vien.v1.Router" in names
    assert len(_embed(edges.router, KEY_A).embeddings) == 1
    for name in ("router", "search"):
        log = edges.logs[name].read_text()
        assert "unauthenticated call to vien.v1." in log and "invalid API key" in log, log[-2000:]
        assert WRONG_KEY not in log and KEY_A not in log and KEY_B not in log
        assert "no API keys configured" not in log and "checks API keys (2 key(s))" in log


def test_search_answers_only_the_keys_tenant(edges, two_tenants) -> None:
    a = _search(edges.search, KEY_A, "when are salaries paid by bank transfer")  # beta's text, asked by alpha
    assert a.hits and {h.tenant for h in a.hits} == {ALPHA}
    assert [h.doc_id for h in a.hits] == ["shared"] and "durian" in a.hits[0].text
    b = _search(edges.search, KEY_B, "when are salaries paid", tenant=BETA)
    assert {h.tenant for h in b.hits} == {BETA} and {h.doc_id for h in b.hits} == {"shared", "beta-only"}
    assert any("payroll" in h.text for h in b.hits) and not any("durian" in h.text for h in b.hits)
    with pytest.raises(grpc.RpcError) as err:
        _search(edges.search, KEY_A, "payroll", tenant=BETA)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert err.value.details().startswith("tenant: ") and BETA in err.value.details()


def test_a_delete_event_of_one_tenant_never_removes_another_tenants_document(mesh, edges, two_tenants) -> None:
    store = two_tenants
    before = {k: [h.id for h in store.doc_chunks(COLL, *k)] for k in DOCS}
    assert len({i for ids in before.values() for i in ids}) == sum(map(len, before.values()))  # ids differ
    # Tenant alpha deletes "shared" (its own, and beta's has the same doc_id) and "beta-only" (beta's).
    asyncio.run(_publish(mesh.addrs["kafka"], [
        DocumentEvent(op=DocumentEvent.OP_DELETE, tenant=ALPHA, doc_id=d, version=9) for d in ("shared", "beta-only")]))
    _settle(mesh, lambda: not store.doc_chunks(COLL, ALPHA, "shared"), "alpha's delete")
    assert [h.id for h in store.doc_chunks(COLL, BETA, "shared")] == before[(BETA, "shared")]
    assert [h.id for h in store.doc_chunks(COLL, BETA, "beta-only")] == before[(BETA, "beta-only")]
    b = _search(edges.search, KEY_B, "secret recipe with star anise")
    assert {h.doc_id for h in b.hits} == {"shared", "beta-only"}
    assert not _search(edges.search, KEY_A, "durian tasting room").hits  # alpha has nothing left: no hits


def _http(address: str, key: str | None, body: bytes, extra: dict[str, str] | None = None) -> tuple[int, dict]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"content-type": "application/json", **(extra or {})}
    if key:
        headers["authorization"] = f"Bearer {key}"
    try:
        conn.request("POST", "/v1/embeddings", body=body, headers=headers)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def test_http_gateway_forwards_the_callers_key_to_the_router(edges) -> None:
    body = json.dumps({"model": "e5-small", "input": "xin chào", "encoding_format": "float"}).encode()
    status, answer = _http(edges.http, KEY_B, body)
    assert status == 200 and len(answer["data"][0]["embedding"]) == 384
    for key in (None, WRONG_KEY):
        status, answer = _http(edges.http, key, body)
        assert status == 401 and answer["error"]["code"] in ("missing_api_key", "invalid_api_key")
    # gamma is a key of the gateway only: the router refuses it, so the router saw the caller's own key.
    status, answer = _http(edges.http, KEY_G, body)
    assert status == 401 and "invalid API key" in answer["error"]["message"], answer
    assert WRONG_KEY not in edges.logs["http"].read_text()


def test_oversize_requests_are_refused_on_each_transport(edges) -> None:
    big = "a" * (LIMIT + 1024)
    with grpc.insecure_channel(edges.router) as ch, pytest.raises(grpc.RpcError) as err:
        router_pb2_grpc.RouterStub(ch).Embed(router_pb2.EmbedRequest(texts=[big], kind=common_pb2.EMBED_KIND_QUERY),
                                             timeout=30, metadata=bearer(KEY_A))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    body = json.dumps({"model": "e5-small", "input": big}).encode()
    status, answer = _http(edges.http, KEY_A, body)
    assert status == 413 and answer["error"]["code"] == "request_too_large"
    assert f"limit of {LIMIT} bytes" in answer["error"]["message"]
    assert len(_embed(edges.router, KEY_A).embeddings) == 1  # still serving


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(auth=st.one_of(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80),
                      st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60)
                      .map(lambda k: f"Bearer {k}")))
def test_random_authorization_values_are_unauthenticated(edges, auth) -> None:
    with grpc.insecure_channel(edges.search) as ch, pytest.raises(grpc.RpcError) as err:
        search_pb2_grpc.SearchStub(ch).Search(search_pb2.SearchRequest(query="x"), timeout=30,
                                              metadata=[("authorization", auth)])
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value.details()
