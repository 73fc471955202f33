"""The query path end to end over real gRPC on loopback: router -> embedders -> Redis, via `vien up`."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from vien.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc, router_pb2, router_pb2_grpc

Q, D = common_pb2.EMBED_KIND_QUERY, common_pb2.EMBED_KIND_DOCUMENT


@pytest.fixture(scope="module")
def router(mesh):
    with grpc.insecure_channel(mesh.router) as ch:
        yield router_pb2_grpc.RouterStub(ch)


def vec(e) -> np.ndarray:
    return np.frombuffer(e.vector, dtype="<f4")


def embed(router, texts, **kw) -> router_pb2.EmbedResponse:
    return router.Embed(router_pb2.EmbedRequest(texts=texts, **kw), timeout=60)


def status_of(router, **kw) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        embed(router, **kw)
    return err.value.code(), err.value.details()


def test_every_server_reports_health_and_reflection(mesh):
    for name in ("router", "query-embedder", "doc-embedder"):
        with grpc.insecure_channel(mesh.addrs[name]) as ch:
            h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert h.status == health_pb2.HealthCheckResponse.SERVING
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            req = reflection_pb2.ServerReflectionRequest(list_services="")
            resp = next(iter(stub.ServerReflectionInfo(iter([req]), timeout=5)))
            names = {s.name for s in resp.list_services_response.service}
            assert "grpc.health.v1.Health" in names
            assert any(n.startswith("vien.v1.") for n in names), names


def test_vietnamese_and_english_queries_are_embedded_and_routed(router):
    texts = ["giá vé máy bay đi Đà Nẵng", "gia ve may bay di da nang", "cheap flights to Da Nang"]
    resp = embed(router, texts, kind=Q)
    assert [e.lang for e in resp.embeddings] == ["vi", "vi", "en"]
    for e in resp.embeddings:
        v = vec(e)
        assert e.dims == 384 and v.shape == (384,)
        assert abs(float(np.linalg.norm(v)) - 1.0) < 1e-4
        assert e.profile == "e5-small" and e.model_id.startswith("intfloat/multilingual-e5-small@")
        assert e.token_count > 3
    vs = [vec(e) for e in resp.embeddings]
    unrelated = vec(embed(router, ["công thức làm bánh mì kẹp thịt"], kind=Q).embeddings[0])
    # the same question in three forms is closer to itself than to an unrelated one
    assert float(vs[0] @ vs[2]) > float(vs[0] @ unrelated) + 0.05
    assert float(vs[0] @ vs[1]) > float(vs[1] @ unrelated)
    assert resp.timings.total_ms > 0 and "langid" in resp.timings.stage_ms


def test_query_cache_hit_returns_the_same_vector(router):
    text = "thủ tục làm hộ chiếu ở TP.HCM"
    first = embed(router, [text], kind=Q, bypass_cache=True).embeddings[0]
    second = embed(router, [text], kind=Q).embeddings[0]
    third = embed(router, [text], kind=Q).embeddings[0]
    assert not first.cache_hit and third.cache_hit
    assert second.vector == third.vector
    assert float(vec(first) @ vec(third)) > 0.9999


def test_document_kind_uses_the_document_prompt(router):
    text = "Hà Nội là thủ đô của Việt Nam."
    q = vec(embed(router, [text], kind=Q).embeddings[0])
    d = embed(router, [text], kind=D).embeddings[0]
    assert not d.cache_hit
    cos = float(q @ vec(d))
    assert 0.8 < cos < 0.9999, "query and passage prompts must differ but stay in one space"


def test_dims_truncation_renormalises(router):
    full = vec(embed(router, ["học máy là gì"], kind=Q).embeddings[0])
    e = embed(router, ["học máy là gì"], kind=Q, dimensions=128).embeddings[0]
    v = vec(e)
    assert e.dims == 128 and v.shape == (128,)
    expected = full[:128] / np.linalg.norm(full[:128])
    assert np.allclose(v, expected, atol=1e-5)


def test_explicit_profile_and_lang_override(router):
    e = embed(router, ["xin chào"], kind=Q, profile="e5-small", lang="en").embeddings[0]
    assert e.lang == "en" and e.profile == "e5-small"


def test_over_long_text_is_truncated_by_default_and_rejected_when_strict(router):
    long_text = "Việt Nam có nhiều danh lam thắng cảnh đẹp. " * 120
    e = embed(router, [long_text], kind=D).embeddings[0]
    assert e.truncated and e.token_count == 512
    code, details = status_of(router, texts=["ok", long_text], kind=D, strict=True)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("texts[1]:") and "limit of 512 tokens" in details


@pytest.mark.parametrize(
    ("kwargs", "field", "fragment"),
    [
        ({"texts": []}, "texts", "at least one"),
        ({"texts": ["ok", ""]}, "texts[1]", "empty"),
        ({"texts": ["   "]}, "texts[0]", "empty"),
        ({"texts": ["x"] * 257}, "texts", "limit of 256"),
        ({"texts": ["x" * 100001]}, "texts[0]", "limit of 100000"),
        ({"texts": ["ok"], "profile": "ghost"}, "profile", "unknown profile 'ghost'"),
        ({"texts": ["ok"], "dimensions": 64}, "dimensions", "128..384"),
        ({"texts": ["ok"], "dimensions": 4096}, "dimensions", "128..384"),
        ({"texts": ["ok"], "lang": "fr"}, "lang", "unknown language"),
        ({"texts": ["ok"], "kind": 7}, "kind", "QUERY or DOCUMENT"),
    ],
)
def test_bad_input_is_invalid_argument_naming_the_field(router, kwargs, field, fragment):
    code, details = status_of(router, **kwargs)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert details.startswith(f"{field}:"), details
    assert fragment in details


def test_invalid_utf8_is_invalid_argument_and_the_server_stays_up(mesh, router):
    # field 1 (texts), length-delimited, bytes that are not UTF-8
    raw = b"\x0a\x02\xff\xfe"
    with grpc.insecure_channel(mesh.router) as ch:
        call = ch.unary_unary("/vien.v1.Router/Embed", request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            call(raw, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request: not a valid vien.v1.EmbedRequest" in err.value.details()
    assert embed(router, ["vẫn hoạt động"], kind=Q).embeddings[0].dims == 384


def test_embedders_validate_on_their_own(mesh):
    with grpc.insecure_channel(mesh.addrs["query-embedder"]) as ch:
        stub = embedder_pb2_grpc.QueryEmbedderStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.Encode(embedder_pb2.EncodeRequest(texts=["a"]), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "profile" in err.value.details()
        ok = stub.Encode(embedder_pb2.EncodeRequest(texts=["a"], profile="e5-small"), timeout=10)
        assert ok.results[0].dims == 384


def test_detect_language_and_list_profiles(router):
    r = router.DetectLanguage(router_pb2.DetectLanguageRequest(texts=["tôi yêu Hà Nội", "toi yeu ha noi",
                                                                      "I love Hanoi"]), timeout=10)
    assert [x.lang for x in r.results] == ["vi", "vi", "en"]
    assert all(x.profile == "e5-small" for x in r.results)
    p = router.ListProfiles(router_pb2.ListProfilesRequest(), timeout=10)
    assert p.default_profile == "e5-small" and p.profiles[0].dims == 384 and p.routing["vi"] == "e5-small"


def test_stream_embeds_each_request_in_order(router):
    reqs = [router_pb2.EmbedRequest(texts=[f"tài liệu số {i}"], kind=D) for i in range(5)]
    out = list(router.EmbedStream(iter(reqs), timeout=60))
    assert len(out) == 5 and all(len(r.embeddings) == 1 for r in out)
