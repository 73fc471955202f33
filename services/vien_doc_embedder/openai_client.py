"""Async client for an OpenAI-compatible ``/v1/embeddings`` server (vLLM in production).

- One pooled ``httpx.AsyncClient`` per encoder (keep-alive connections, at most ``max_concurrency``).
- Requests in flight are bounded by a semaphore of ``max_concurrency`` shared by every caller, so
  concurrent gRPC requests together never put more than that on the server.
- Token-budget batching: texts are sorted by token count (longest first) and packed greedily into
  requests of at most ``max_batch_texts`` texts and ``max_batch_tokens`` tokens (a single text over
  the budget goes alone). Results are put back in the caller's order.
- Retries with exponential backoff and full jitter on 429, 5xx, connection errors and timeouts;
  ``Retry-After`` (seconds or an HTTP date) is honoured as a lower bound. Other 4xx are not retried.
- Responses are validated (count, indices, dims, finite values) and L2-normalised here.

Errors are vien.runtime.errors: ``Unavailable`` (server down/overloaded after the retries, or timed
out), ``ResourceExhausted`` (still rate-limited after the retries, with the server's retry hint),
``UpstreamError(FAILED_PRECONDITION)`` for a 4xx that retrying cannot fix (wrong model name, missing
key, ``dimensions`` refused), ``UpstreamError(INTERNAL)`` for a malformed response.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import numpy as np

from vien.runtime.backoff import backoff_delay
from vien.runtime.config import ConfigError, EncoderConfig
from vien.runtime.errors import ResourceExhausted, Unavailable, UpstreamError
from vien.runtime.metrics import BACKEND_REQUESTS

log = logging.getLogger("vien.openai_client")

_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


def plan_batches(token_counts: Sequence[int], max_batch_tokens: int, max_batch_texts: int) -> list[list[int]]:
    """Indices grouped into requests: longest first, at most max_batch_texts texts and max_batch_tokens tokens."""
    order = sorted(range(len(token_counts)), key=lambda i: -token_counts[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    tokens = 0
    for i in order:
        n = token_counts[i]
        if cur and (len(cur) >= max_batch_texts or tokens + n > max_batch_tokens):
            batches.append(cur)
            cur, tokens = [], 0
        cur.append(i)
        tokens += n
    if cur:
        batches.append(cur)
    return batches


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _server_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        if isinstance(body, dict):
            err = body.get("error", body.get("message", body.get("detail")))
            if isinstance(err, dict):
                err = err.get("message", err)
            return str(err)[:300]
    except ValueError:
        pass
    return resp.text[:300] or resp.reason_phrase


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    texts: int = 0
    busy_s: float = 0.0
    dims_ignored_warned: bool = False
    status_seen: dict[int, int] = field(default_factory=dict)


class OpenAIEmbeddingsClient:
    """Embeddings from one OpenAI-compatible server for one encoder of the profiles config."""

    def __init__(self, name: str, cfg: EncoderConfig, *, backoff_base_s: float = 0.2,
                 backoff_max_s: float = 10.0, retry_after_max_s: float = 30.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if cfg.backend != "openai" or not cfg.base_url:
            raise ConfigError(f"encoders.{name}: not an openai backend with a base_url")
        headers = {"Content-Type": "application/json", "User-Agent": "vien-doc-embedder"}
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise ConfigError(f"encoders.{name}.api_key_env: environment variable {cfg.api_key_env} "
                                  "is not set (or empty)")
            headers["Authorization"] = f"Bearer {key}"
        self.name = name
        self.cfg = cfg
        # base_url as OpenAI clients take it: http://host:8000/v1 -> POST http://host:8000/v1/embeddings
        self.url = cfg.base_url.rstrip("/") + "/embeddings"
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        self.stats = ClientStats()
        self._sem = asyncio.Semaphore(cfg.max_concurrency)
        self._http = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(cfg.timeout_s, connect=min(cfg.timeout_s, 5.0)),
            limits=httpx.Limits(max_connections=cfg.max_concurrency,
                                max_keepalive_connections=cfg.max_concurrency, keepalive_expiry=30.0),
            transport=transport,
            trust_env=False,  # an in-cluster backend: never route it through an environment proxy
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ public
    async def embed(self, texts: Sequence[str], token_counts: Sequence[int], expected_dims: int,
                    dimensions: int | None = None, max_retries: int | None = None) -> np.ndarray:
        """float32 [len(texts), dims], unit rows, in input order. ``dimensions`` is sent as given."""
        if not texts:
            return np.zeros((0, dimensions or expected_dims), np.float32)
        want = dimensions or expected_dims
        batches = plan_batches(token_counts, self.cfg.max_batch_tokens, self.cfg.max_batch_texts)
        tasks = [asyncio.ensure_future(self.embed_batch([texts[i] for i in b], want, dimensions, max_retries))
                 for b in batches]
        try:
            parts = await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        out = np.empty((len(texts), want), np.float32)
        for b, vecs in zip(batches, parts, strict=True):
            out[b] = vecs
        return out

    async def embed_batch(self, texts: list[str], want_dims: int, dimensions: int | None = None,
                          max_retries: int | None = None) -> np.ndarray:
        body: dict[str, Any] = {"model": self.cfg.model, "input": texts,
                                "encoding_format": self.cfg.encoding_format}
        if dimensions is not None:
            body["dimensions"] = dimensions
        retries = self.cfg.max_retries if max_retries is None else max_retries
        attempt = 0
        while True:
            async with self._sem:
                t0 = time.perf_counter()
                try:
                    resp = await self._http.post(self.url, json=body)
                    await resp.aread()
                except httpx.TimeoutException as exc:
                    failure: tuple[str, str, float | None] = (
                        "retry_timeout", f"timed out after {self.cfg.timeout_s:g}s ({type(exc).__name__})", None)
                    resp = None
                except httpx.TransportError as exc:
                    failure = ("retry_connect", f"connection failed ({type(exc).__name__}: {exc})", None)
                    resp = None
                finally:
                    self.stats.busy_s += time.perf_counter() - t0
                    self.stats.requests += 1
            if resp is not None:
                code = resp.status_code
                self.stats.status_seen[code] = self.stats.status_seen.get(code, 0) + 1
                if code == 200:
                    BACKEND_REQUESTS.labels(self.name, "ok").inc()
                    self.stats.texts += len(texts)
                    return self._parse(resp, len(texts), want_dims)
                if code not in _RETRY_STATUS:
                    BACKEND_REQUESTS.labels(self.name, "rejected").inc()
                    hint = ""
                    if dimensions is not None and code in (400, 422):
                        hint = " (if the model cannot shorten vectors, set send_dimensions: false)"
                    if code in (401, 403):
                        hint = f" (check the key in ${self.cfg.api_key_env})" if self.cfg.api_key_env else \
                            " (the server wants a key: set api_key_env)"
                    raise UpstreamError(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        f"encoders.{self.name}: POST {self.url} answered HTTP {code} (not retried): "
                        f"{_server_message(resp)}{hint}")
                kind = "retry_429" if code == 429 else "retry_5xx"
                failure = (kind, f"HTTP {code}: {_server_message(resp)}",
                           parse_retry_after(resp.headers.get("retry-after")))
            kind, reason, retry_after = failure
            if attempt >= retries:
                BACKEND_REQUESTS.labels(self.name, "failed").inc()
                msg = f"encoders.{self.name}: POST {self.url} failed after {attempt + 1} attempt(s): {reason}"
                if kind == "retry_429":
                    hint_ms = int(1000 * (retry_after if retry_after is not None else self._backoff(attempt)))
                    raise ResourceExhausted(msg, retry_after_ms=max(1, hint_ms))
                raise Unavailable(msg)
            BACKEND_REQUESTS.labels(self.name, kind).inc()
            delay = self._backoff(attempt)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.retry_after_max_s))
            self.stats.retries += 1
            log.warning("encoders.%s: %s; retry %d/%d in %.2fs", self.name, reason, attempt + 1, retries, delay)
            await asyncio.sleep(delay)
            attempt += 1

    # ------------------------------------------------------------------ internals
    def _backoff(self, attempt: int) -> float:
        """uniform(0.5, 1) x min(max, base x 2^attempt) (vien.runtime.backoff)."""
        return backoff_delay(attempt, self.backoff_base_s, self.backoff_max_s, jitter=0.5)

    def _invalid(self, problem: str) -> UpstreamError:
        return UpstreamError(grpc.StatusCode.INTERNAL, f"encoders.{self.name}: invalid response from {self.url}: "
                                                       f"{problem}")

    def _parse(self, resp: httpx.Response, n: int, want_dims: int) -> np.ndarray:
        try:
            payload = resp.json()
        except ValueError:
            raise self._invalid("body is not JSON") from None
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise self._invalid("no 'data' list")
        if len(data) != n:
            raise self._invalid(f"expected {n} embeddings, got {len(data)}")
        rows: list[np.ndarray | None] = [None] * n
        for pos, item in enumerate(data):
            if not isinstance(item, dict):
                raise self._invalid(f"data[{pos}] is not an object")
            idx = item.get("index", pos)
            if not isinstance(idx, int) or not 0 <= idx < n or rows[idx] is not None:
                raise self._invalid(f"data[{pos}].index {idx!r} is out of range or repeated")
            emb = item.get("embedding")
            try:
                if isinstance(emb, str):
                    vec = np.frombuffer(base64.b64decode(emb, validate=True), dtype="<f4").astype(np.float32)
                elif isinstance(emb, list):
                    vec = np.asarray(emb, dtype=np.float32)
                else:
                    raise ValueError("not a list or base64 string")
            except (ValueError, TypeError) as exc:
                raise self._invalid(f"data[{pos}].embedding: {exc}") from None
            rows[idx] = vec
        dims = {int(r.shape[0]) for r in rows if r is not None}
        if len(dims) != 1:
            raise self._invalid(f"embeddings of different lengths {sorted(dims)}")
        got = dims.pop()
        mat = np.stack([r for r in rows if r is not None])
        if got < want_dims:
            raise self._invalid(f"{got}-d vectors, expected {want_dims}")
        if got > want_dims:
            if not self.stats.dims_ignored_warned:
                log.warning("encoders.%s: server returned %d-d vectors for %d requested; truncating locally",
                            self.name, got, want_dims)
                self.stats.dims_ignored_warned = True
            mat = mat[:, :want_dims]
        if not np.isfinite(mat).all():
            bad = int(np.where(~np.isfinite(mat).all(axis=1))[0][0])
            raise self._invalid(f"non-finite values in embedding {bad}")
        norms = np.linalg.norm(mat, axis=1, keepdims=True)
        if (norms < 1e-12).any():
            raise self._invalid(f"zero vector for input {int(np.argmin(norms))}")
        return np.ascontiguousarray(mat / norms, dtype=np.float32)


def estimate_tokens(text: str) -> int:
    """Token estimate when no tokenizer of the served model is at hand: chars/3 plus 2 specials."""
    return math.ceil(len(text) / 3) + 2
