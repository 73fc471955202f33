"""Document embedding without transport: validate, prompt, token-budget batching, truncate dims.

A profile's document encoder is a DocBackend (backends.py): local ONNX behind the dynamic Batcher,
or an OpenAI-compatible server (vLLM in production). Before a profile is served its space guard
(space_guard.py) must pass. Profile states:
- ok: served;
- pending: the guard could not run yet (remote backend unreachable/overloaded). Encode answers
  UNAVAILABLE; the guard is retried in the background with backoff. It does not take the process out
  of service while another profile is ok (an unreachable vLLM must not stop the default ONNX profile);
- failed: the encoders disagree (or the encoder cannot be used at all: missing API key, 4xx, bad model).
  Encode answers FAILED_PRECONDITION and health is NOT_SERVING, because indexing vectors from the
  wrong space silently corrupts search. The process stays up and answers health.
A remote backend also has a circuit breaker (backends.py): while it is open, its profiles answer
UNAVAILABLE at once, and health is NOT_SERVING when no profile is left servable (the usual layout: a
doc-embedder in front of one vLLM). A background probe closes it again once the server answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from vien.embedding.encoders import TextEncoder, load_onnx_encoder
from vien.embedding.requests import check_texts, resolve_dims, resolve_profile
from vien.embedding.results import EncodedItem, EncodeResult
from vien.runtime.backoff import Backoff
from vien.runtime.config import DOCUMENT, EncoderConfig, Settings, VienConfig
from vien.runtime.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable, VienError
from vien.runtime.metrics import SPACE_GUARD_OK, TEXTS, TOKENS
from vien_doc_embedder.backends import DocBackend, OnnxDocBackend, OpenAIDocBackend, TokenCounter, TokenizerCounter
from vien_doc_embedder.openai_client import OpenAIEmbeddingsClient
from vien_doc_embedder.space_guard import GuardResult, compare, document_inputs, query_side_vectors

log = logging.getLogger("vien.doc_embedder")

EncoderLoader = Callable[[EncoderConfig, Settings], TextEncoder]
HealthCallback = Callable[[bool, str], Awaitable[None]]


@dataclass
class ProfileState:
    status: Literal["ok", "pending", "failed"]
    reason: str = ""
    guard: GuardResult | None = None
    counter: TokenCounter | None = None


class DocEmbedder:
    def __init__(self, settings: Settings, config: VienConfig, loader: EncoderLoader = load_onnx_encoder,
                 max_queue: int = 4096, *, client_kwargs: dict[str, Any] | None = None,
                 guard_retry_s: tuple[float, float] = (1.0, 30.0)) -> None:
        self.settings = settings
        self.config = config
        self._loader = loader
        self.max_queue = max_queue
        self._client_kwargs = client_kwargs or {}
        self._guard_retry_s = guard_retry_s
        self.backends: dict[str, DocBackend] = {}
        self.backend_errors: dict[str, str] = {}
        self.profiles: dict[str, ProfileState] = {n: ProfileState("pending", "not checked yet")
                                                  for n in config.profiles}
        # ONNX document encoders and their batchers (kept for callers that inspect them)
        self.encoders: dict[str, TextEncoder] = {}
        self.batchers: dict[str, Any] = {}
        self._guard_encoders: dict[str, TextEncoder] = {}
        self._on_health: HealthCallback | None = None
        self._retry_task: asyncio.Task[None] | None = None
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        for name in config.profiles:
            SPACE_GUARD_OK.labels(name).set(-1)

    # ------------------------------------------------------------------ lifecycle
    async def start(self, on_health: HealthCallback | None = None) -> None:
        self._on_health = on_health
        for name in sorted({p.document_encoder for p in self.config.profiles.values()}):
            await self._build_backend(name)
        for pname in sorted(self.config.profiles):
            await self._check(pname)
        self._release_guard_encoders()
        await self._publish_health()
        if any(s.status == "pending" for s in self.profiles.values()):
            self._retry_task = asyncio.get_running_loop().create_task(self._retry_pending(), name="space-guard")

    async def close(self) -> None:
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry_task
            self._retry_task = None
        for t in [*self._probes.values(), *self._tasks]:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
        for b in self.backends.values():
            await b.close()

    def serving(self) -> tuple[bool, str]:
        """Process health: NOT_SERVING while any profile failed its guard, or while none is ready."""
        failed = [s.reason for s in self.profiles.values() if s.status == "failed"]
        if failed:
            return False, "; ".join(failed)
        if not any(s.status == "ok" and not self._circuit_open(n) for n, s in self.profiles.items()):
            return False, "no profile ready: " + "; ".join(
                f"circuit open for document encoder {self.config.profiles[n].document_encoder!r}"
                if s.status == "ok" else s.reason for n, s in self.profiles.items())
        return True, ""

    def _circuit_open(self, pname: str) -> bool:
        breaker = getattr(self.backends.get(self.config.profiles[pname].document_encoder), "breaker", None)
        return breaker is not None and breaker.state != "closed"

    # ------------------------------------------------------------------ encode
    async def encode(self, texts: list[str], profile: str, dimensions: int = 0,
                     strict: bool = False) -> EncodeResult:
        t_start = time.perf_counter()
        if not profile:
            raise InvalidArgument("profile", "is required")
        pname, prof = resolve_profile(self.config, profile)
        dims = resolve_dims(pname, prof, dimensions)
        check_texts(texts, self.config.limits)
        state = self.profiles[pname]
        if state.status == "failed":
            raise FailedPrecondition(f"profile {pname!r} is not served by this doc-embedder: {state.reason}")
        if state.status == "pending":
            raise Unavailable(f"profile {pname!r} is not ready yet: {state.reason}")
        backend = self.backends[prof.document_encoder]
        enc = await backend.encode([prof.prompt(DOCUMENT, t) for t in texts], dims=dims, full_dims=prof.dims,
                                   max_tokens=prof.max_tokens, strict=strict, profile=pname, counter=state.counter)
        TOKENS.labels("doc-embedder", pname).inc(sum(enc.token_counts))
        TEXTS.labels("doc-embedder", pname).inc(len(texts))
        items = [EncodedItem(v, n, c) for v, n, c in zip(enc.vectors, enc.token_counts, enc.truncated, strict=True)]
        stage = {**enc.stage_ms, "total": (time.perf_counter() - t_start) * 1e3}
        return EncodeResult(items, backend.model_id, stage)

    # ------------------------------------------------------------------ internals
    async def _build_backend(self, name: str) -> None:
        cfg = self.config.encoders[name]
        t0 = time.perf_counter()
        if cfg.backend == "onnx":
            enc = await asyncio.to_thread(self._loader, cfg, self.settings)
            log.info("loaded document encoder %s (%s %s) in %.1fs", name, enc.model_id, enc.variant,
                     time.perf_counter() - t0)
            ob = OnnxDocBackend(name, cfg, enc, self.max_queue)
            await ob.start()
            self.encoders[name] = enc
            self.batchers[name] = ob.batcher
            self.backends[name] = ob
            return
        try:
            client = OpenAIEmbeddingsClient(name, cfg, **self._client_kwargs)
        except ValueError as exc:  # ConfigError: e.g. the API key variable is not set
            self.backend_errors[name] = str(exc)
            log.error("document encoder %s cannot be used: %s", name, exc)
            return
        backend = OpenAIDocBackend(name, cfg, client)
        backend.listeners.append(functools.partial(self._on_breaker_change, name))
        self.backends[name] = backend
        log.info("document encoder %s: openai backend %s model %r", name, client.url, cfg.model)

    async def _guard_encoder(self, name: str) -> TextEncoder:
        if name in self.encoders:
            return self.encoders[name]
        if name not in self._guard_encoders:
            self._guard_encoders[name] = await asyncio.to_thread(self._loader, self.config.encoders[name],
                                                                 self.settings)
        return self._guard_encoders[name]

    def _release_guard_encoders(self) -> None:
        if not any(s.status == "pending" for s in self.profiles.values()):
            self._guard_encoders.clear()  # tokenizers the counters need stay referenced by them

    async def _check(self, pname: str) -> None:
        prof = self.config.profiles[pname]
        qname, dname = prof.query_encoder, prof.document_encoder
        state = await self._run_guard(pname, qname, dname)
        self.profiles[pname] = state
        SPACE_GUARD_OK.labels(pname).set({"ok": 1, "failed": 0, "pending": -1}[state.status])
        if state.status == "ok":
            log.info(state.guard.line() if state.guard else f"profile {pname!r} ready")
        elif state.status == "failed":
            log.error("profile %r refused: %s", pname, state.reason)
        else:
            log.warning("profile %r pending: %s", pname, state.reason)

    async def _run_guard(self, pname: str, qname: str, dname: str) -> ProfileState:
        prof = self.config.profiles[pname]
        if dname in self.backend_errors:
            return ProfileState("failed", f"document encoder {dname!r}: {self.backend_errors[dname]}")
        if qname == dname:
            res = GuardResult(pname, qname, dname, True, 1.0, "", "same encoder on both sides")
            return ProfileState("ok", guard=res)
        qcfg, dcfg = self.config.encoders[qname], self.config.encoders[dname]
        if qcfg.backend != "onnx":
            return ProfileState("failed", f"space guard cannot run for profile {pname!r}: query encoder {qname!r} "
                                "must be a local onnx model (the query-embedder runs ONNX only)")
        backend = self.backends[dname]
        try:
            qenc = await self._guard_encoder(qname)
        except Exception as exc:
            return ProfileState("failed", f"space guard for profile {pname!r}: cannot load query encoder "
                                f"{qname!r}: {exc}")
        sent, embedded = document_inputs(prof, dcfg)
        try:
            q = await asyncio.to_thread(query_side_vectors, qenc, embedded, prof.dims)
            d = await backend.encode(sent, dims=prof.dims, full_dims=prof.dims, max_tokens=prof.max_tokens,
                                     strict=False, profile=pname, max_retries=0)
        except (Unavailable, ResourceExhausted) as exc:
            return ProfileState("pending", f"space guard could not reach document encoder {dname!r}: "
                                f"{exc.message}")
        except VienError as exc:
            return ProfileState("failed", f"space guard for profile {pname!r}: document encoder {dname!r} "
                                f"failed: {exc.message}")
        res = compare(pname, qname, dname, q, d.vectors)
        if not res.ok:
            return ProfileState("failed", res.line(), guard=res)
        counter: TokenCounter | None = None
        tok = getattr(qenc, "_tok", None)
        if dcfg.backend == "openai" and tok is not None:
            counter = TokenizerCounter(tok, dcfg.server_prompt)
        return ProfileState("ok", guard=res, counter=counter)

    def _on_breaker_change(self, encoder: str, old: str, state: str) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._publish_health())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if state == "open" and encoder not in self._probes:
            self._probes[encoder] = loop.create_task(self._probe(encoder), name=f"probe-{encoder}")

    async def _probe(self, encoder: str) -> None:
        """Close the breaker without waiting for traffic: one small request after each cool-down."""
        backend = self.backends[encoder]
        breaker = backend.breaker  # type: ignore[attr-defined]
        pname, prof = next((n, p) for n, p in self.config.profiles.items() if p.document_encoder == encoder)
        try:
            while breaker.state != "closed":
                await asyncio.sleep(max(0.2, breaker.retry_in()))
                if breaker.state == "closed" or breaker.retry_in() > 0:
                    continue
                with contextlib.suppress(VienError):
                    await backend.encode([prof.prompt(DOCUMENT, "probe")], dims=prof.dims, full_dims=prof.dims,
                                         max_tokens=prof.max_tokens, strict=False, profile=pname, max_retries=0)
        finally:
            self._probes.pop(encoder, None)

    async def _publish_health(self) -> None:
        if self._on_health is not None:
            ok, reason = self.serving()
            await self._on_health(ok, reason)

    async def _retry_pending(self) -> None:
        base, cap = self._guard_retry_s
        backoff = Backoff(base / 2, cap, jitter=0.0)  # base, 2 x base, ... up to cap (as before)
        while True:
            pending = [n for n, s in self.profiles.items() if s.status == "pending"]
            if not pending:
                self._release_guard_encoders()
                return
            await asyncio.sleep(backoff.next())
            before = self.serving()
            for pname in pending:
                await self._check(pname)
            if self.serving() != before:
                await self._publish_health()
