"""The OpenAI embeddings API without HTTP: validate a request body, map it onto the router's Embed
call, shape answers and errors the way OpenAI does, and check bearer keys.

Everything here is plain Python over dicts and bytes, so it is tested without a server; `app.py` is
the thin ASGI layer around it.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from vien.embedding.requests import check_texts, resolve_dims
from vien.runtime.auth import ApiKeys
from vien.runtime.config import DOCUMENT, QUERY, Kind, LimitsConfig, VienConfig
from vien.runtime.errors import InvalidArgument, Unauthenticated
from vien_gateway.token_arrays import TokenArrayError, check_token_arrays

DEFAULT_TIMEOUT_S = 30.0
KNOWN_FIELDS = frozenset({"model", "input", "dimensions", "encoding_format", "user", "vien_kind", "vien_truncate",
                          "vien_sparse"})
INVALID = "invalid_request_error"


class ApiError(Exception):
    """An OpenAI-shaped error: HTTP status plus {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, type: str = INVALID, param: str | None = None,
                 code: str | None = None, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after_ms = retry_after_ms

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def headers(self) -> list[tuple[str, str]]:
        if self.retry_after_ms is None:
            return []
        return [("retry-after", str(max(1, math.ceil(self.retry_after_ms / 1000)))),
                ("retry-after-ms", str(self.retry_after_ms))]


def _bad(param: str | None, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object" if isinstance(v, dict) else type(v).__name__


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class EmbedCall:
    """What the router is asked for one `POST /v1/embeddings`."""

    model: str            # as the client named it; echoed back in the answer
    profile: str
    texts: list[str]
    dimensions: int       # 0 = the profile's default
    encoding_format: str  # float | base64
    kind: Kind            # query | document
    strict: bool          # reject texts over the token limit (OpenAI's behaviour) instead of truncating
    user: str | None
    single: bool = False  # `input` was one string (errors name `input`, not `input[0]`)
    token_arrays: list[list[int]] | None = None  # token-id input, decoded into `texts` before embedding
    sparse: bool = False  # also return the lexical sparse vector of each input (`vien_sparse`)


def resolve_model(config: VienConfig, model: str) -> str:
    """A profile name or an alias (config `openai.aliases`, `openai.document_aliases`) -> the profile; 404
    like OpenAI otherwise."""
    if model in config.profiles:
        return model
    profile = config.openai.aliases.get(model) or config.openai.document_aliases.get(model)
    if profile is None:
        known = ", ".join(model_ids(config))
        raise ApiError(404, f"model: the model {model!r} does not exist (known: {known})", param="model",
                       code="model_not_found")
    return profile


def model_ids(config: VienConfig) -> list[str]:
    return sorted(set(config.profiles) | set(config.openai.aliases) | set(config.openai.document_aliases))


def input_limits(config: VienConfig) -> LimitsConfig:
    """The router's per-text limits with OpenAI's inputs per request (`openai.max_inputs`, 2048)."""
    return config.limits.model_copy(update={"max_texts_per_request": config.openai.max_inputs})


def check_inputs(texts: list[str], config: VienConfig, single: bool = False) -> list[str]:
    """Per-request and per-text limits on the texts of a request; errors name `input` / `input[i]`."""
    try:
        return check_texts(texts, input_limits(config), field="input")
    except InvalidArgument as exc:
        if single and exc.field == "input[0]":  # one string: name `input`, not `input[0]`
            raise _bad("input", "input" + exc.message[len("input[0]"):]) from None
        raise _bad(exc.field, exc.message) from None


def _inputs(value: Any, config: VienConfig) -> tuple[list[str], list[list[int]] | None]:
    """`input` as texts, or as token-id arrays (decoded later, see token_arrays)."""
    if value is None:
        raise _bad("input", "input: this field is required (a string or an array of strings)", "missing_required")
    if isinstance(value, str):
        return check_inputs([value], config, single=True), None
    if not isinstance(value, list):
        raise _bad("input", f"input: expected a string or an array of strings, got {_json_type(value)}",
                   "invalid_type")
    if value and all(_is_int(x) for x in value):  # one token array
        value = [value]
    limit = config.openai.max_inputs
    if len(value) > limit:
        raise _bad("input", f"input: {len(value)} inputs exceeds the limit of {limit} per request")
    if value and any(isinstance(x, list) for x in value):
        try:
            return [], check_token_arrays(value)
        except TokenArrayError as exc:
            raise _bad(exc.param, exc.message, exc.code) from None
    for i, x in enumerate(value):
        if not isinstance(x, str):
            raise _bad(f"input[{i}]", f"input[{i}]: expected a string, got {_json_type(x)}", "invalid_type")
    return check_inputs(value, config), None


def with_texts(call: EmbedCall, texts: list[str], config: VienConfig) -> EmbedCall:
    """The call with its token arrays decoded into texts (the same per-text checks as text input)."""
    return dataclasses.replace(call, texts=check_inputs(texts, config, call.single), token_arrays=None)


def parse_embeddings_request(body: Any, config: VienConfig) -> EmbedCall:
    """Validate a decoded JSON body; every failure is a 400/404 ApiError naming the parameter."""
    if not isinstance(body, dict):
        raise _bad(None, f"request body: expected a JSON object, got {_json_type(body)}", "invalid_type")
    for name in body:
        if name not in KNOWN_FIELDS:
            raise _bad(name, f"Unrecognized request argument supplied: {name}", "unknown_parameter")
    model = body.get("model")
    if model is None:
        raise _bad("model", "model: this field is required", "missing_required")
    if not isinstance(model, str):
        raise _bad("model", f"model: expected a string, got {_json_type(model)}", "invalid_type")
    profile = resolve_model(config, model)
    texts, token_arrays = _inputs(body.get("input"), config)

    dims = body.get("dimensions")
    if dims is None:
        dims = 0
    elif not _is_int(dims):
        raise _bad("dimensions", f"dimensions: expected an integer, got {_json_type(dims)}", "invalid_type")
    elif dims < 1:
        raise _bad("dimensions", f"dimensions: must be a positive integer, got {dims}")
    else:
        try:
            resolve_dims(profile, config.profiles[profile], dims)
        except InvalidArgument as exc:
            raise _bad("dimensions", exc.message) from None

    fmt = body.get("encoding_format")
    if fmt is None:
        fmt = "float"
    elif fmt not in ("float", "base64"):
        shown = repr(fmt) if isinstance(fmt, str) else _json_type(fmt)
        raise _bad("encoding_format", f"encoding_format: must be 'float' or 'base64', got {shown}")
    if fmt == "base64" and profile in config.openai.float_only:
        raise _bad("encoding_format", f"encoding_format: 'base64' is not available for model {model!r} (profile "
                                      f"{profile!r} is float-only); ask for encoding_format='float'",
                   "unsupported_encoding_format")

    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("user", f"user: expected a string, got {_json_type(user)}", "invalid_type")
    kind = body.get("vien_kind")
    if kind is None:
        kind = DOCUMENT if model in config.openai.document_aliases else QUERY
    elif kind not in (QUERY, DOCUMENT):
        shown = repr(kind) if isinstance(kind, str) else _json_type(kind)
        raise _bad("vien_kind", f"vien_kind: must be 'query' or 'document', got {shown}")
    truncate = body.get("vien_truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise _bad("vien_truncate", f"vien_truncate: expected a boolean, got {_json_type(truncate)}",
                   "invalid_type")
    sparse = body.get("vien_sparse")
    if sparse is not None and not isinstance(sparse, bool):
        raise _bad("vien_sparse", f"vien_sparse: expected a boolean, got {_json_type(sparse)}", "invalid_type")
    if sparse and not config.profiles[profile].lexical.enabled:
        raise _bad("vien_sparse", f"vien_sparse: model {model!r} (profile {profile!r}) has no lexical vectors "
                                  "(lexical.enabled is false)")
    raw = body.get("input")
    single = isinstance(raw, str) or (token_arrays is not None and isinstance(raw, list)
                                      and len(token_arrays) == 1 and not isinstance(raw[0], list))
    return EmbedCall(model, profile, texts, dims, fmt, kind, strict=not truncate, user=user, single=single,
                     token_arrays=token_arrays, sparse=bool(sparse))


Sparse = tuple[Sequence[int], Sequence[float]]


def router_batches(n: int, size: int) -> list[range]:
    """Input positions of each router request (the router takes at most `size` texts), in order."""
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def embeddings_response(model: str, vectors: Sequence[bytes], prompt_tokens: int, encoding_format: str,
                        sparse: Sequence[Sparse] | None = None) -> bytes:
    """OpenAI's answer as JSON bytes. Vectors are packed little-endian float32, as the router sends them;
    base64 is those very bytes (what the openai SDK decodes), float is the same float32 values. With
    `sparse`, each item also carries `vien_sparse: {indices, values}` (OpenAI's clients ignore it)."""
    if encoding_format == "base64":
        data: list[dict[str, Any]] = [
            {"object": "embedding", "index": i, "embedding": base64.b64encode(v).decode("ascii")}
            for i, v in enumerate(vectors)]
    else:
        data = [{"object": "embedding", "index": i, "embedding": np.frombuffer(v, dtype="<f4")}
                for i, v in enumerate(vectors)]
    if sparse is not None:
        for item, (indices, values) in zip(data, sparse, strict=True):
            item["vien_sparse"] = {"indices": list(indices), "values": list(values)}
    return orjson.dumps(
        {"object": "list", "data": data, "model": model,
         "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def model_object(config: VienConfig, model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "vien",
            "vien_profile": resolve_model(config, model_id)}


def models_list(config: VienConfig) -> dict[str, Any]:
    return {"object": "list", "data": [model_object(config, m) for m in model_ids(config)]}


# gRPC status of the router -> HTTP. INVALID_ARGUMENT messages start with the field ("texts[1]: ..."),
# renamed here to the OpenAI parameter it came from.
_FIELD_RE = re.compile(r"^(texts|profile|dimensions|kind|sparse)(\[\d+\])?: ")
_PARAM_OF = {"texts": "input", "profile": "model", "dimensions": "dimensions", "kind": "vien_kind",
             "sparse": "vien_sparse"}
_STATUS = {
    "UNAUTHENTICATED": (401, INVALID, "invalid_api_key"),
    "PERMISSION_DENIED": (403, "permission_error", "permission_denied"),
    "NOT_FOUND": (404, INVALID, "not_found"),
    "RESOURCE_EXHAUSTED": (429, "rate_limit_error", "rate_limit_exceeded"),
    "UNAVAILABLE": (503, "server_error", "service_unavailable"),
    "FAILED_PRECONDITION": (503, "server_error", "service_unavailable"),
    "CANCELLED": (503, "server_error", "cancelled"),
    "DEADLINE_EXCEEDED": (504, "server_error", "timeout"),
}


def error_from_status(code: str, details: str, retry_after_ms: int | None = None,
                      single_input: bool = False, offset: int = 0) -> ApiError:
    """Map a router status (its name, e.g. "INVALID_ARGUMENT") and message onto an OpenAI error. `offset`:
    the position of the router request's first text in the HTTP request (texts[i] is input[offset + i])."""
    if code in ("INVALID_ARGUMENT", "OUT_OF_RANGE"):
        m = _FIELD_RE.match(details)
        if not m:
            return _bad(None, details)
        index = m.group(2) or ""
        if index and single_input and offset == 0 and index == "[0]":
            index = ""
        elif index:
            index = f"[{int(index[1:-1]) + offset}]"
        param = _PARAM_OF[m.group(1)] + index
        rest = details[m.end():]
        message = f"{param}: {rest}"
        if "(strict mode)" in rest:
            message += "; send \"vien_truncate\": true to truncate such texts instead"
        return _bad(param, message, "context_length_exceeded" if "tokens exceeds" in rest else "invalid_value")
    status, type_, err_code = _STATUS.get(code, (502, "server_error", "upstream_error"))
    if status == 429:
        return ApiError(429, f"overloaded, retry later: {details}", type_, None, err_code, retry_after_ms or 1000)
    if status == 504:
        details = f"the router did not answer in time ({details})"
    elif status >= 500:
        details = f"router: {code}: {details}"
    return ApiError(status, details, type_, None, err_code)


def authenticate(keys: ApiKeys, authorization: str | None) -> str:
    """The tenant of `Authorization: Bearer <key>` ("" when no keys are configured: open endpoint).

    The same key set and check as the gRPC edges (vien.runtime.auth), answered the way OpenAI does."""
    if not keys.enabled:
        return ""
    if not authorization or not authorization.strip():
        raise ApiError(401, "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.",
                       code="missing_api_key")
    try:
        return keys.authenticate(authorization)
    except Unauthenticated:
        raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key") from None


def client_timeout(header: str | None) -> float | None:
    """The client's own timeout for the whole request (the openai SDK sends x-stainless-read-timeout)."""
    if header:
        try:
            t = float(header)
        except ValueError:
            return None
        if t > 0 and math.isfinite(t):
            return t
    return None


def request_timeout(header: str | None, default: float = DEFAULT_TIMEOUT_S) -> float:
    """The wait for one router call: the client's own timeout, capped at `default` (VIEN_HTTP_TIMEOUT_S)."""
    t = client_timeout(header)
    return default if t is None else min(t, default)
