"""Document encoders behind one small interface: local ONNX (dynamic batching) or a remote
OpenAI-compatible server (vLLM). Both take document-prompted texts and return unit vectors at the
requested dims with per-text token counts, so logic.py does not care which one runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from vien.embedding.batcher import Batcher
from vien.embedding.encoders import TextEncoder, prepare
from vien.embedding.vectors import truncate
from vien.runtime.breaker import CircuitBreaker, State
from vien.runtime.config import EncoderConfig
from vien.runtime.errors import InvalidArgument, ResourceExhausted, Unavailable
from vien.runtime.metrics import (
    BREAKER_OPENS,
    BREAKER_REJECTED,
    BREAKER_STATE,
)
from vien_doc_embedder.openai_client import OpenAIEmbeddingsClient, estimate_tokens

log = logging.getLogger("vien.doc_embedder")
_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True)
class Encoded:
    vectors: np.ndarray          # [n, dims], unit rows
    token_counts: list[int]
    truncated: list[bool]
    stage_ms: dict[str, float]


class TokenCounter(Protocol):
    """Counts (and cuts) texts as the served model will see them, server prompt included."""

    exact: bool

    def fit(self, text: str, limit: int) -> tuple[str, int, bool]:
        """(text cut to at most `limit` tokens, its token count, whether it was cut)."""
        ...


def _split(server_prompt: str) -> tuple[str, str]:
    prefix, suffix = server_prompt.split("{text}")
    return prefix, suffix


class EstimateCounter:
    """chars/3 (+2 specials): no tokenizer of the served model here. Cuts are approximate."""

    exact = False

    def __init__(self, server_prompt: str = "{text}") -> None:
        self.prefix, self.suffix = _split(server_prompt)

    def fit(self, text: str, limit: int) -> tuple[str, int, bool]:
        n = estimate_tokens(self.prefix + text + self.suffix)
        if n <= limit:
            return text, n, False
        keep = max(1, (limit - 2) * 3 - len(self.prefix) - len(self.suffix))
        return text[:keep], limit, True


class TokenizerCounter:
    """Exact counts with the tokenizer of a local model of the same family (HF `tokenizers` object).

    Used for a remote profile only after its space guard passed, i.e. after the local query encoder
    was shown to produce the server's vectors, which also shows the tokenizers agree.
    """

    exact = True

    def __init__(self, tokenizer: Any, server_prompt: str = "{text}") -> None:
        self._tok = tokenizer
        self.prefix, self.suffix = _split(server_prompt)
        self._suffix_tokens = len(tokenizer.encode(self.suffix, add_special_tokens=False).ids) if self.suffix else 0

    def fit(self, text: str, limit: int) -> tuple[str, int, bool]:
        full = self.prefix + text + self.suffix
        enc = self._tok.encode(full, add_special_tokens=True)
        n = len(enc.ids)
        if n <= limit:
            return text, n, False
        # keep tokens [0, limit - 1 - suffix) like prepare() does (the final special stays), then cut the
        # text at the end of the last kept token (offsets are in `full`'s characters)
        last = max(1, limit - 2 - self._suffix_tokens)
        end = enc.offsets[last][1] - len(self.prefix)
        return text[:max(1, end)].rstrip(), limit, True


class DocBackend(Protocol):
    name: str
    kind: str           # "onnx" | "openai"
    model_id: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def encode(self, prompted: list[str], *, dims: int, full_dims: int, max_tokens: int, strict: bool,
                     profile: str, counter: TokenCounter | None = None, max_retries: int | None = None
                     ) -> Encoded: ...


class OnnxDocBackend:
    kind = "onnx"

    def __init__(self, name: str, cfg: EncoderConfig, encoder: TextEncoder, max_queue: int) -> None:
        self.name = name
        self.cfg = cfg
        self.encoder = encoder
        self.model_id = f"{encoder.model_id}@{encoder.revision}"
        self.batcher = Batcher(encoder, max_batch_texts=cfg.max_batch_texts, max_batch_tokens=cfg.max_batch_tokens,
                               max_queue=max_queue, name=f"d-{name}", service="doc-embedder")

    async def start(self) -> None:
        self.batcher.start()

    async def close(self) -> None:
        await self.batcher.close()

    async def encode(self, prompted: list[str], *, dims: int, full_dims: int, max_tokens: int, strict: bool,
                     profile: str, counter: TokenCounter | None = None, max_retries: int | None = None
                     ) -> Encoded:
        t0 = time.perf_counter()
        prepared = prepare(self.encoder, prompted, max_tokens, strict, profile)
        t_tok = time.perf_counter() - t0
        t0 = time.perf_counter()
        vectors = await self.batcher.embed([p.ids for p in prepared])
        t_inf = time.perf_counter() - t0
        mat = truncate(np.stack(vectors), dims)
        return Encoded(mat, [p.token_count for p in prepared], [p.truncated for p in prepared],
                       {"tokenize": t_tok * 1e3, "inference": t_inf * 1e3})


class OpenAIDocBackend:
    """vLLM (or any OpenAI-compatible server). The server batches continuously itself, so requests are
    only packed per call (token budget) and bounded in flight; there is no cross-request queue here.

    A circuit breaker sits in front of the client: after `breaker_failures` consecutive requests that
    failed even after their retries (server down, 5xx, timeouts), calls fail fast with UNAVAILABLE
    instead of each waiting out its own retries; one probe goes through after the cool-down.
    429 (ResourceExhausted) is flow control, not a fault: it neither opens nor closes the breaker."""

    kind = "openai"

    def __init__(self, name: str, cfg: EncoderConfig, client: OpenAIEmbeddingsClient | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.cfg = cfg
        self.client = client or OpenAIEmbeddingsClient(name, cfg)
        self.model_id = f"{cfg.model}@openai"
        self.listeners: list[Callable[[State, State], None]] = []
        self.breaker = CircuitBreaker(f"encoders.{name}", cfg.breaker_failures, cfg.breaker_cooldown_s,
                                      max(cfg.breaker_cooldown_s, cfg.breaker_max_cooldown_s), clock=clock,
                                      on_change=self._on_breaker)
        BREAKER_STATE.labels(name).set(0)

    def _on_breaker(self, b: CircuitBreaker, old: State, new: State) -> None:
        BREAKER_STATE.labels(self.name).set(_STATE_VALUE[new])
        if new == "open":
            BREAKER_OPENS.labels(self.name).inc()
            log.warning("encoders.%s: circuit open after %d consecutive failures; failing fast for %.1fs",
                        self.name, b.consecutive_failures, b.cooldown_s)
        elif new == "closed":
            log.info("encoders.%s: circuit closed (backend answered again)", self.name)
        for fn in self.listeners:
            fn(old, new)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self.client.aclose()

    async def encode(self, prompted: list[str], *, dims: int, full_dims: int, max_tokens: int, strict: bool,
                     profile: str, counter: TokenCounter | None = None, max_retries: int | None = None
                     ) -> Encoded:
        t0 = time.perf_counter()
        counter = counter or EstimateCounter(self.cfg.server_prompt)
        texts: list[str] = []
        counts: list[int] = []
        cut: list[bool] = []
        for i, raw in enumerate(prompted):
            # the same normalisation the local encoders apply, so both sides embed the same string
            text = unicodedata.normalize("NFC", raw).strip()
            fitted, n, was_cut = counter.fit(text, max_tokens)
            if was_cut and strict:
                full = counter.fit(text, 1 << 30)[1]
                how = "" if counter.exact else " (estimated as characters/3)"
                raise InvalidArgument(f"texts[{i}]", f"{full} tokens{how} exceeds the limit of {max_tokens} "
                                      f"tokens of profile {profile!r} (strict mode)")
            texts.append(fitted)
            counts.append(n)
            cut.append(was_cut)
        t_tok = time.perf_counter() - t0
        send = dims if (dims < full_dims and self.cfg.send_dimensions) else None
        b = self.breaker
        if not b.allow():
            BREAKER_REJECTED.labels(self.name).inc()
            raise Unavailable(f"document encoder {self.name!r}: circuit open after {b.consecutive_failures} "
                              f"consecutive failures; next probe in {b.retry_in():.1f}s")
        t0 = time.perf_counter()
        verdict = False
        try:
            mat = await self.client.embed(texts, counts, expected_dims=full_dims, dimensions=send,
                                          max_retries=max_retries)
            b.record_success()
            verdict = True
        except Unavailable:
            b.record_failure()
            verdict = True
            raise
        except (ResourceExhausted, asyncio.CancelledError):
            raise
        except Exception:
            b.record_success()  # the server answered (4xx, malformed body): reachable, not a breaker fault
            verdict = True
            raise
        finally:
            if not verdict:
                b.release()
        t_inf = time.perf_counter() - t0
        mat = truncate(mat, dims)   # no-op when the server already shortened them
        return Encoded(mat, counts, cut, {"tokenize": t_tok * 1e3, "inference": t_inf * 1e3})
