"""The OpenAI-compatible HTTP gateway (`vien serve gateway`, `http=` in `vien up`'s ready line), driven by
the official `openai` package and by raw HTTP for what the SDK will not send."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import openai
import pytest
import yaml
from openai import OpenAI
from openai_fixtures import gateway_process

from vien.runtime.auth import ApiKeys, parse_api_keys
from vien.runtime.config import ConfigError, VienConfig, default_config_path, load_config
from vien.v1 import common_pb2, router_pb2, router_pb2_grpc
from vien_gateway.logic import (
    ApiError,
    authenticate,
    client_timeout,
    error_from_status,
    parse_embeddings_request,
    request_timeout,
    router_batches,
)
from vien_gateway.token_arrays import TokenArrayError, TokenEncodings, decode, encoding_name

ALIAS = "text-embedding-3-small"
TEXTS = ["giá vé máy bay đi Đà Nẵng", "gia ve may bay di da nang", "cheap flights to Da Nang"]


def _client(address: str, key: str = "unused") -> OpenAI:
    return OpenAI(base_url=f"http://{address}/v1", api_key=key, max_retries=0, timeout=60)


def _raw(address: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
         raw_body: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        data = raw_body if raw_body is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, data, {"Content-Type": "application/json", **(headers or {})})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(r.read())
    finally:
        conn.close()


def _grpc_vectors(router: str, texts: list[str], kind: int = common_pb2.EMBED_KIND_QUERY, dims: int = 0
                  ) -> tuple[list[np.ndarray], int]:
    with grpc.insecure_channel(router) as ch:
        resp = router_pb2_grpc.RouterStub(ch).Embed(
            router_pb2.EmbedRequest(texts=texts, kind=kind, profile="e5-small", dimensions=dims), timeout=60)
    return [np.frombuffer(e.vector, "<f4") for e in resp.embeddings], sum(e.token_count for e in resp.embeddings)


def _vec(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


@pytest.fixture(scope="module")
def http_addr(mesh) -> str:
    return str(mesh.addrs["http"])


@pytest.fixture(scope="module")
def client(http_addr: str) -> Iterator[OpenAI]:
    c = _client(http_addr)
    yield c
    c.close()


# ---- the happy paths, through the official SDK -------------------------------------------------------


def test_single_string_through_the_alias_matches_grpc(client: OpenAI, mesh) -> None:
    r = client.embeddings.create(model=ALIAS, input=TEXTS[0])
    assert r.object == "list" and r.model == ALIAS and len(r.data) == 1
    assert r.data[0].index == 0 and r.data[0].object == "embedding"
    v = _vec(r.data[0].embedding)
    (expected,), tokens = _grpc_vectors(mesh.router, [TEXTS[0]])
    assert v.shape == (384,) and np.array_equal(v, expected)
    assert r.usage.prompt_tokens == r.usage.total_tokens == tokens > 0


def test_list_profile_name_and_alias_give_the_same_vectors(client: OpenAI, mesh) -> None:
    by_alias = client.embeddings.create(model=ALIAS, input=TEXTS)
    by_profile = client.embeddings.create(model="e5-small", input=TEXTS)
    assert [d.index for d in by_alias.data] == [0, 1, 2]
    expected, tokens = _grpc_vectors(mesh.router, TEXTS)
    for a, b, e in zip(by_alias.data, by_profile.data, expected, strict=True):
        assert np.array_equal(_vec(a.embedding), e) and np.array_equal(_vec(b.embedding), e)
    assert by_alias.usage.prompt_tokens == tokens and by_profile.model == "e5-small"
    # cross-lingual sanity: unaccented Vietnamese stays next to the accented query
    a, b = (_vec(d.embedding) for d in by_alias.data[:2])
    assert float(a @ b) > 0.8


def test_dimensions_truncate_and_renormalise(client: OpenAI, mesh) -> None:
    r = client.embeddings.create(model=ALIAS, input=TEXTS[2], dimensions=256)
    v = _vec(r.data[0].embedding)
    assert v.shape == (256,) and abs(float(np.linalg.norm(v)) - 1) < 1e-4
    (expected,), _ = _grpc_vectors(mesh.router, [TEXTS[2]], dims=256)
    assert np.array_equal(v, expected)


def test_base64_and_float_carry_identical_vectors(client: OpenAI, http_addr: str) -> None:
    as_float = client.embeddings.create(model=ALIAS, input=TEXTS, encoding_format="float")
    as_b64_sdk = client.embeddings.create(model=ALIAS, input=TEXTS)  # the SDK asks for base64 and decodes it
    status, _, raw = _raw(http_addr, "POST", "/v1/embeddings",
                          {"model": ALIAS, "input": TEXTS, "encoding_format": "base64"})
    assert status == 200 and all(isinstance(d["embedding"], str) for d in raw["data"])
    import base64
    for f, s, rb in zip(as_float.data, as_b64_sdk.data, raw["data"], strict=True):
        from_b64 = np.frombuffer(base64.b64decode(rb["embedding"]), "<f4")
        assert np.array_equal(_vec(f.embedding), _vec(s.embedding))
        assert np.array_equal(_vec(f.embedding), from_b64)
    # no encoding_format at all (a raw client): floats, as OpenAI answers
    status, _, raw = _raw(http_addr, "POST", "/v1/embeddings", {"model": ALIAS, "input": "hello", "user": "u-1"})
    assert status == 200 and isinstance(raw["data"][0]["embedding"], list)


def test_vien_kind_document_uses_the_document_side(client: OpenAI, mesh) -> None:
    q = _vec(client.embeddings.create(model=ALIAS, input=TEXTS[0]).data[0].embedding)
    d = _vec(client.embeddings.create(model=ALIAS, input=TEXTS[0], extra_body={"vien_kind": "document"})
             .data[0].embedding)
    (expected,), _ = _grpc_vectors(mesh.router, [TEXTS[0]], kind=common_pb2.EMBED_KIND_DOCUMENT)
    assert np.array_equal(d, expected) and not np.array_equal(d, q)


def test_models_list_and_retrieve(client: OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"e5-small", ALIAS} <= ids
    m = client.models.retrieve(ALIAS)
    assert m.id == ALIAS and m.owned_by == "vien"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-nope")
    assert err.value.status_code == 404 and err.value.body["code"] == "model_not_found"


def test_vien_truncate_opts_out_of_the_length_error(client: OpenAI) -> None:
    r = client.embeddings.create(model=ALIAS, input="word " * 700, extra_body={"vien_truncate": True})
    assert len(r.data[0].embedding) == 384 and r.usage.prompt_tokens == 512


def test_open_endpoint_is_logged_as_a_warning(mesh) -> None:
    log = (Path(mesh.log_dir) / "http.log").read_text()
    assert "no API keys configured" in log


# ---- bad input: OpenAI-shaped errors with the right status, never a 500 ------------------------------

BAD = [
    ({"model": "gpt-nope", "input": "x"}, 404, "model", "model_not_found"),
    ({"input": "x"}, 400, "model", "missing_required"),
    ({"model": 3, "input": "x"}, 400, "model", "invalid_type"),
    ({"model": ALIAS, "input": "x", "dimensions": 64}, 400, "dimensions", "invalid_value"),
    ({"model": ALIAS, "input": "x", "dimensions": 4096}, 400, "dimensions", "invalid_value"),
    ({"model": ALIAS, "input": "x", "dimensions": 0}, 400, "dimensions", "invalid_value"),
    ({"model": ALIAS, "input": "x", "dimensions": "256"}, 400, "dimensions", "invalid_type"),
    ({"model": ALIAS, "input": "x", "dimensions": True}, 400, "dimensions", "invalid_type"),
    ({"model": ALIAS, "input": "word " * 700}, 400, "input", "context_length_exceeded"),
    ({"model": ALIAS, "input": ["ok", "word " * 700]}, 400, "input[1]", "context_length_exceeded"),
    ({"model": ALIAS, "input": "x" * 100001}, 400, "input", "invalid_value"),
    ({"model": ALIAS, "input": ["q"] * 2049}, 400, "input", "invalid_value"),
    ({"model": ALIAS, "input": ""}, 400, "input", "invalid_value"),
    ({"model": ALIAS, "input": "   "}, 400, "input", "invalid_value"),
    ({"model": ALIAS, "input": []}, 400, "input", "invalid_value"),
    ({"model": ALIAS, "input": ["ok", ""]}, 400, "input[1]", "invalid_value"),
    ({"model": ALIAS}, 400, "input", "missing_required"),
    ({"model": ALIAS, "input": None}, 400, "input", "missing_required"),
    ({"model": ALIAS, "input": 123}, 400, "input", "invalid_type"),
    ({"model": ALIAS, "input": {"text": "x"}}, 400, "input", "invalid_type"),
    ({"model": ALIAS, "input": ["ok", 5]}, 400, "input[1]", "invalid_type"),
    ({"model": ALIAS, "input": [[1, 2], []]}, 400, "input[1]", "invalid_value"),
    ({"model": ALIAS, "input": [[1, -2]]}, 400, "input[0]", "invalid_type"),
    ({"model": ALIAS, "input": [[1, 2], "text"]}, 400, "input[1]", "invalid_value"),
    ({"model": ALIAS, "input": [[7] * 8193]}, 400, "input[0]", "context_length_exceeded"),
    ({"model": ALIAS, "input": [[7] * 8000] * 38}, 400, "input", "context_length_exceeded"),
    ({"model": ALIAS, "input": "x", "encoding_format": "hex"}, 400, "encoding_format", "invalid_value"),
    ({"model": ALIAS, "input": "x", "user": 5}, 400, "user", "invalid_type"),
    ({"model": ALIAS, "input": "x", "vien_kind": "passage"}, 400, "vien_kind", "invalid_value"),
    ({"model": ALIAS, "input": "x", "vien_truncate": "yes"}, 400, "vien_truncate", "invalid_type"),
    ({"model": ALIAS, "input": "x", "vien_sparse": 1}, 400, "vien_sparse", "invalid_type"),
    ({"model": ALIAS, "input": "x", "temperature": 1}, 400, "temperature", "unknown_parameter"),
    (["not", "an", "object"], 400, None, "invalid_type"),
]


@pytest.mark.parametrize(("body", "status", "param", "code"), BAD, ids=[f"{i}-{b[3]}" for i, b in enumerate(BAD)])
def test_bad_input_is_an_openai_error(http_addr: str, body: Any, status: int, param: str | None, code: str) -> None:
    got, _, answer = _raw(http_addr, "POST", "/v1/embeddings", body)
    assert got == status, answer
    assert set(answer) == {"error"} and set(answer["error"]) == {"message", "type", "param", "code"}
    err = answer["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["code"] == code
    assert err["message"] and (param is None or code == "unknown_parameter" or err["message"].startswith(param))


def test_transport_level_errors(http_addr: str) -> None:
    status, _, answer = _raw(http_addr, "POST", "/v1/embeddings", raw_body=b'{"model": ')
    assert status == 400 and answer["error"]["code"] == "invalid_json"
    status, _, answer = _raw(http_addr, "GET", "/v1/embeddings")
    assert status == 405 and answer["error"]["type"] == "invalid_request_error"
    status, _, answer = _raw(http_addr, "GET", "/v2/nothing")
    assert status == 404 and answer["error"]["code"] == "unknown_url"
    # the client's deadline is passed on to the router: a hopeless one is a 504, not a hang
    status, _, answer = _raw(http_addr, "POST", "/v1/embeddings", {"model": ALIAS, "input": "hết giờ 1"},
                             headers={"x-request-timeout": "0.00001"})
    assert status == 504 and answer["error"]["code"] == "timeout"


def test_sdk_raises_typed_errors(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=ALIAS, input=[[101, 102], []])
    assert err.value.status_code == 400 and err.value.body["param"] == "input[1]"
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=ALIAS, input="x", dimensions=10)
    assert "allowed 128..384" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-ada-002", input="x")


# ---- API keys: a second gateway with keys and a float-only profile ----------------------------------


@pytest.fixture(scope="module")
def keyed_gateway(mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("keyed-gateway")
    cfg = yaml.safe_load(default_config_path().read_text())
    cfg["openai"] = {"aliases": {ALIAS: "e5-small"}, "float_only": ["e5-small"],
                     "api_keys": [{"tenant": "acme", "key_env": "TEST_ACME_KEY"}]}
    (tmp / "profiles.yaml").write_text(yaml.safe_dump(cfg))
    env = {"VIEN_CONFIG": str(tmp / "profiles.yaml"), "VIEN_ROUTER_ADDR": mesh.router,
           "TEST_ACME_KEY": "sk-acme-123", "VIEN_API_KEYS": "beta:sk-beta-456"}
    with gateway_process(env, tmp / "gateway.log") as address:
        yield address, tmp / "gateway.log"


def test_api_keys_are_required_when_configured(keyed_gateway: tuple[str, Path]) -> None:
    address, log = keyed_gateway
    status, _, answer = _raw(address, "POST", "/v1/embeddings", {"model": ALIAS, "input": "x"})
    assert status == 401 and answer["error"]["code"] == "missing_api_key"
    status, _, answer = _raw(address, "GET", "/v1/models", headers={"Authorization": "Basic sk-acme-123"})
    assert status == 401 and answer["error"]["code"] == "invalid_api_key"
    with _client(address, "sk-wrong") as c, pytest.raises(openai.AuthenticationError) as err:
        c.embeddings.create(model=ALIAS, input="x", encoding_format="float")
    assert err.value.status_code == 401 and err.value.body["code"] == "invalid_api_key"
    for key in ("sk-acme-123", "sk-beta-456"):  # from config (key_env) and from VIEN_API_KEYS
        with _client(address, key) as c:
            r = c.embeddings.create(model=ALIAS, input="xin chào", encoding_format="float")
            assert len(r.data[0].embedding) == 384
            assert ALIAS in {m.id for m in c.models.list()}
    assert "no API keys configured" not in log.read_text()


def test_base64_is_refused_for_a_float_only_profile(keyed_gateway: tuple[str, Path]) -> None:
    address, _ = keyed_gateway
    with _client(address, "sk-acme-123") as c, pytest.raises(openai.BadRequestError) as err:
        c.embeddings.create(model=ALIAS, input="x")  # the SDK asks for base64 unless told otherwise
    body = err.value.body
    assert body["param"] == "encoding_format" and body["code"] == "unsupported_encoding_format"
    assert "float-only" in body["message"]


# ---- plain logic, no server -------------------------------------------------------------------------


def test_router_statuses_map_onto_http() -> None:
    e = error_from_status("INVALID_ARGUMENT", "texts[3]: 704 tokens exceeds the limit of 512 tokens of "
                                              "profile 'e5-small' (strict mode)")
    assert (e.status, e.param, e.code) == (400, "input[3]", "context_length_exceeded")
    assert e.message.startswith("input[3]: 704 tokens") and "vien_truncate" in e.message
    e = error_from_status("INVALID_ARGUMENT", "texts[0]: must not be empty", single_input=True)
    assert e.param == "input"
    assert error_from_status("INVALID_ARGUMENT", "dimensions: 64 is out of range").param == "dimensions"
    assert error_from_status("INVALID_ARGUMENT", "request: not a valid message").param is None
    e = error_from_status("RESOURCE_EXHAUSTED", "queue full", 1500)
    assert e.status == 429 and dict(e.headers()) == {"retry-after": "2", "retry-after-ms": "1500"}
    assert dict(error_from_status("RESOURCE_EXHAUSTED", "queue full").headers())["retry-after"] == "1"
    assert error_from_status("UNAUTHENTICATED", "no").status == 401
    assert error_from_status("UNAVAILABLE", "query-embedder down").status == 503
    assert error_from_status("DEADLINE_EXCEEDED", "late").status == 504
    e = error_from_status("INTERNAL", "boom")
    assert e.status == 502 and e.type == "server_error"
    assert set(e.body()["error"]) == {"message", "type", "param", "code"}


def test_keys_timeouts_and_config_validation() -> None:
    assert parse_api_keys("acme:sk-1, beta:sk:2,,bare") == [("acme", "sk-1"), ("beta", "sk:2"), ("default", "bare")]
    with pytest.raises(ConfigError):
        parse_api_keys(":nokey")
    cfg = load_config()
    assert authenticate(ApiKeys(), None) == ""  # no keys: open
    keys = ApiKeys.load(cfg, {"VIEN_API_KEYS": "acme:sk-1"})
    assert authenticate(keys, "Bearer sk-1") == "acme"
    for bad in (None, "Bearer sk-2", "sk-1"):
        with pytest.raises(ApiError) as err:
            authenticate(keys, bad)
        assert err.value.status == 401
    assert request_timeout(None) == 30.0 and request_timeout("600") == 30.0 and request_timeout("2.5") == 2.5
    assert request_timeout("nan") == 30.0 and request_timeout("-1") == 30.0

    raw = yaml.safe_load(default_config_path().read_text())
    for openai_section, where in (({"aliases": {"m": "nope"}}, "openai.aliases.m"),
                                  ({"float_only": ["nope"]}, "openai.float_only[0]"),
                                  ({"api_keys": [{"tenant": "t"}]}, "key_env")):
        with pytest.raises(ValueError, match=where.replace("[", r"\[").replace("]", r"\]")):
            VienConfig.model_validate({**raw, "openai": openai_section})
    keyed = VienConfig.model_validate({**raw, "openai": {"api_keys": [{"tenant": "t", "key_env": "NOPE_X"}]}})
    with pytest.raises(ConfigError, match="NOPE_X"):
        ApiKeys.load(keyed, {})
    call = parse_embeddings_request({"model": ALIAS, "input": "x", "dimensions": 384}, cfg)
    assert call.profile == "e5-small" and call.strict and call.single and call.kind == "query"


# ---- conformance: every answer against the schemas of OpenAI's own OpenAPI description -------------------
# tests/data/openai_openapi/embeddings.json: an extract of openai/openai-openapi (MIT, commit noted in it).
# OpenAI's description models `embedding` as an array of floats only; for encoding_format=base64 (a string
# that the SDKs decode) the same schema is used with that one property swapped for a base64 string.

OPENAPI = json.loads((Path(__file__).parent / "data" / "openai_openapi" / "embeddings.json").read_text())


def _conforms(instance: Any, name: str, base64_embedding: bool = False) -> None:
    import copy

    import jsonschema

    root = copy.deepcopy(OPENAPI)
    if base64_embedding:
        root["components"]["schemas"]["Embedding"]["properties"]["embedding"] = {
            "type": "string", "contentEncoding": "base64"}
    jsonschema.Draft202012Validator({**root, "$ref": f"#/components/schemas/{name}"},
                                    format_checker=jsonschema.FormatChecker()).validate(instance)


def test_the_schema_extract_is_what_it_says() -> None:
    assert OPENAPI["_commit"] == "f85dbe223d40e1a31cba812ab2d755c7e98a92a3" and "MIT" in OPENAPI["_license"]
    assert (Path(__file__).parent / "data" / "openai_openapi" / "LICENSE").read_text().startswith("The MIT License")
    import jsonschema
    with pytest.raises(jsonschema.ValidationError):  # the extract does reject what OpenAI would not send
        _conforms({"object": "list", "data": [{"object": "embedding", "index": 0}], "model": "m",
                   "usage": {"prompt_tokens": 1, "total_tokens": 1}}, "CreateEmbeddingResponse")
    with pytest.raises(jsonschema.ValidationError):
        _conforms({"error": {"message": "m", "type": "t", "param": None}}, "ErrorResponse")


@pytest.mark.parametrize("dims", [None, 256])
@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_embeddings_answers_conform_to_openai_schema(http_addr: str, fmt: str, dims: int | None) -> None:
    body: dict[str, Any] = {"model": ALIAS, "input": TEXTS, "encoding_format": fmt}
    if dims:
        body["dimensions"] = dims
    _conforms(body, "CreateEmbeddingRequest")  # what we send is a request OpenAI accepts
    status, headers, answer = _raw(http_addr, "POST", "/v1/embeddings", body)
    assert status == 200 and headers["content-type"] == "application/json"
    _conforms(answer, "CreateEmbeddingResponse", base64_embedding=fmt == "base64")
    import base64
    for i, d in enumerate(answer["data"]):
        n = len(d["embedding"]) if fmt == "float" else len(base64.b64decode(d["embedding"])) // 4
        assert d["index"] == i and n == (dims or 384)


def test_models_answers_conform_to_openai_schema(http_addr: str) -> None:
    status, _, answer = _raw(http_addr, "GET", "/v1/models")
    assert status == 200
    _conforms(answer, "ListModelsResponse")
    ids = {m["id"] for m in answer["data"]}
    assert {"text-embedding-3-small", "text-embedding-3-small-document", "e5-small"} <= ids
    status, _, answer = _raw(http_addr, "GET", f"/v1/models/{ALIAS}")
    assert status == 200
    _conforms(answer, "Model")


ERRORS = [  # (method, path, body, headers, status): one of each error class the gateway answers over HTTP
    ("POST", "/v1/embeddings", {"model": ALIAS, "input": ""}, {}, 400),
    ("POST", "/v1/embeddings", {"model": ALIAS, "input": "word " * 700}, {}, 400),
    ("POST", "/v1/embeddings", {"model": ALIAS, "input": [[1, 2], []]}, {}, 400),
    ("POST", "/v1/embeddings", {"model": "gpt-nope", "input": "x"}, {}, 404),
    ("GET", "/v1/models/gpt-nope", None, {}, 404),
    ("GET", "/v2/nothing", None, {}, 404),
    ("GET", "/v1/embeddings", None, {}, 405),
    ("POST", "/v1/embeddings", {"model": ALIAS, "input": "hết giờ 2"}, {"x-request-timeout": "0.00001"}, 504),
]


@pytest.mark.parametrize(("method", "path", "body", "headers", "status"), ERRORS,
                         ids=[f"{e[4]}-{i}" for i, e in enumerate(ERRORS)])
def test_error_answers_conform_to_openai_schema(http_addr: str, method: str, path: str, body: Any,
                                                headers: dict[str, str], status: int) -> None:
    got, _, answer = _raw(http_addr, method, path, body, headers)
    assert got == status, answer
    _conforms(answer, "ErrorResponse")


def test_unparsable_and_oversized_bodies_conform(http_addr: str) -> None:
    got, _, answer = _raw(http_addr, "POST", "/v1/embeddings", raw_body=b'{"model": ')
    assert got == 400
    _conforms(answer, "ErrorResponse")
    big = b'{"model": "text-embedding-3-small", "input": "' + b"a" * (17 * 1024 * 1024) + b'"}'
    got, _, answer = _raw(http_addr, "POST", "/v1/embeddings", raw_body=big)
    assert got == 413 and "VIEN_MAX_MESSAGE_BYTES" in answer["error"]["message"]
    _conforms(answer, "ErrorResponse")


def test_keyed_and_router_status_errors_conform(keyed_gateway: tuple[str, Path]) -> None:
    address, _ = keyed_gateway
    for headers in ({}, {"Authorization": "Bearer sk-wrong"}):
        got, _, answer = _raw(address, "POST", "/v1/embeddings", {"model": ALIAS, "input": "x"}, headers)
        assert got == 401
        _conforms(answer, "ErrorResponse")
    got, _, answer = _raw(address, "POST", "/v1/embeddings",
                          {"model": ALIAS, "input": "x", "encoding_format": "base64"},
                          {"Authorization": "Bearer sk-acme-123"})
    assert got == 400 and answer["error"]["code"] == "unsupported_encoding_format"
    _conforms(answer, "ErrorResponse")
    # every router status the gateway maps (429, 5xx) has the same shape; these need a failing router, so
    # they are checked on the mapping itself
    for code in ("RESOURCE_EXHAUSTED", "UNAVAILABLE", "FAILED_PRECONDITION", "CANCELLED", "DEADLINE_EXCEEDED",
                 "INTERNAL", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND", "INVALID_ARGUMENT"):
        _conforms(error_from_status(code, "texts[2]: details").body(), "ErrorResponse")


def test_batches_kinds_timeouts_and_token_array_logic() -> None:
    cfg = load_config()
    assert router_batches(2048, 256)[-1] == range(1792, 2048) and len(router_batches(2048, 256)) == 8
    assert router_batches(300, 256) == [range(0, 256), range(256, 300)]
    e = error_from_status("INVALID_ARGUMENT", "texts[34]: 704 tokens exceeds the limit of 512 tokens", offset=256)
    assert e.param == "input[290]" and e.message.startswith("input[290]: 704 tokens")
    assert error_from_status("INVALID_ARGUMENT", "texts[0]: x", single_input=True, offset=0).param == "input"
    assert error_from_status("INVALID_ARGUMENT", "sparse: no lexical").param == "vien_sparse"
    doc = parse_embeddings_request({"model": "text-embedding-3-small-document", "input": "x"}, cfg)
    assert doc.kind == "document" and doc.profile == "e5-small"
    assert parse_embeddings_request({"model": "text-embedding-3-small-document", "input": "x",
                                     "vien_kind": "query"}, cfg).kind == "query"
    arrays = parse_embeddings_request({"model": ALIAS, "input": [5, 6, 7]}, cfg)
    assert arrays.token_arrays == [[5, 6, 7]] and arrays.single and arrays.texts == []
    assert client_timeout("600") == 600.0 and client_timeout("x") is None and request_timeout("600", 45.0) == 45.0
    # which encoding: config first, then tiktoken's model map, then cl100k_base (LangChain's rule)
    assert encoding_name(cfg, ALIAS) == "cl100k_base" and encoding_name(cfg, "e5-small") == "cl100k_base"
    assert encoding_name(cfg, "gpt-4o") == "o200k_base"
    custom = cfg.model_copy(update={"openai": cfg.openai.model_copy(update={"token_encodings": {ALIAS: "r50k_base"}})})
    assert encoding_name(custom, ALIAS) == "r50k_base"
    with pytest.raises(ValueError, match=r"openai\.document_aliases\.e5-small"):
        raw = yaml.safe_load(default_config_path().read_text())
        VienConfig.model_validate({**raw, "openai": {"document_aliases": {"e5-small": "e5-small"}}})

    from tiktoken_fixtures import local_encoding

    enc = local_encoding("vien_test_bpe")
    text = "Đà Nẵng 😀 flights"
    ids = enc.encode_ordinary(text)
    assert decode(enc, [ids]) == [text]
    assert decode(enc, [enc.encode_ordinary("😀")[:1]]) == ["\ufffd"]  # a cut UTF-8 character
    with pytest.raises(TokenArrayError, match=r"input\[0\]\[1\]: token id 99999 is not in"):
        decode(enc, [[5, 99999]])

    import asyncio
    encodings = TokenEncodings()
    with pytest.raises(TokenArrayError) as err:
        asyncio.run(encodings.decode("no_such_encoding", [[1]]))
    assert err.value.code == "token_encoding_unavailable" and "'no_such_encoding'" in err.value.message
    assert "check_embedding_ctx_length=False" in err.value.message


def test_router_refuses_sparse_for_a_profile_without_lexical_vectors() -> None:
    import asyncio

    from vien.runtime.errors import InvalidArgument
    from vien_router.logic import Router

    cfg = load_config()
    off = cfg.model_copy(update={"profiles": {n: p.model_copy(update={"lexical": p.lexical.model_copy(
        update={"enabled": False})}) for n, p in cfg.profiles.items()}})

    class NeverCalled:  # the check comes before any embedder is asked
        async def encode(self, *a: Any, **kw: Any) -> Any:
            raise AssertionError("embedder called")

    router = Router(off, NeverCalled(), NeverCalled(), detect=lambda t: ("vi", 1.0))
    with pytest.raises(InvalidArgument) as err:
        asyncio.run(router.embed(["xin chào"], sparse=True))
    assert err.value.field == "sparse" and "lexical.enabled is false" in err.value.message
    e = error_from_status("INVALID_ARGUMENT", f"sparse: {err.value.message}")
    assert e.param == "vien_sparse" and e.status == 400
