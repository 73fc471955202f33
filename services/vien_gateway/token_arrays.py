"""OpenAI-style token-id arrays (`input: [[9906, 1917], ...]`, what LangChain's OpenAIEmbeddings sends by
default) turned back into the text they came from, so the profile's own tokenizer can embed it.

The client tokenized with a tiktoken encoding; the gateway decodes with the same one:
- which one: `openai.token_encodings[model]` when configured, else tiktoken's model -> encoding map for
  the request's `model`, else `cl100k_base` -- the rule LangChain and LlamaIndex follow for the same name;
- found the way tiktoken finds it (`tiktoken.get_encoding`: its registry, then the cache directory
  TIKTOKEN_CACHE_DIR / DATA_GYM_CACHE_DIR / $TMPDIR/data-gym-cache, then a download). Machines without
  network need that cache pre-seeded (README "Replace text-embedding-3-small"); a failure is remembered for
  RETRY_AFTER_S so a missing encoding costs one lookup, not one per request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from vien.runtime.config import VienConfig

DEFAULT_ENCODING = "cl100k_base"
RETRY_AFTER_S = 60.0
MAX_TOKENS_PER_INPUT = 8192       # OpenAI's per-input limit for its embedding models
MAX_TOKENS_PER_REQUEST = 300_000  # OpenAI's limit summed over the inputs of one request
AVOID = ("or have the client send text instead of token ids (LangChain: "
         "OpenAIEmbeddings(..., check_embedding_ctx_length=False))")


class TokenArrayError(Exception):
    """A token array that cannot be decoded: the OpenAI parameter it concerns, a message and a code."""

    def __init__(self, param: str, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.message = message
        self.code = code


def encoding_name(config: VienConfig, model: str) -> str:
    """The tiktoken encoding a client used for `model` (see the module docstring)."""
    configured = config.openai.token_encodings.get(model)
    if configured:
        return configured
    try:
        import tiktoken
    except ImportError:
        return DEFAULT_ENCODING
    try:
        return str(tiktoken.encoding_name_for_model(model))
    except KeyError:
        return DEFAULT_ENCODING


def check_token_arrays(arrays: Sequence[Any]) -> list[list[int]]:
    """Shape and size of the arrays (ids are checked against the encoding when decoding)."""
    total = 0
    out: list[list[int]] = []
    for i, ids in enumerate(arrays):
        if not isinstance(ids, list) or not ids:
            raise TokenArrayError(f"input[{i}]", f"input[{i}]: expected a non-empty array of token ids")
        for j, t in enumerate(ids):
            if not isinstance(t, int) or isinstance(t, bool) or t < 0:
                raise TokenArrayError(f"input[{i}]", f"input[{i}][{j}]: expected a token id (an integer >= 0), "
                                      f"got {t!r}", "invalid_type")
        if len(ids) > MAX_TOKENS_PER_INPUT:
            raise TokenArrayError(f"input[{i}]", f"input[{i}]: {len(ids)} token ids exceeds the limit of "
                                  f"{MAX_TOKENS_PER_INPUT} per input", "context_length_exceeded")
        total += len(ids)
        out.append(ids)
    if total > MAX_TOKENS_PER_REQUEST:
        raise TokenArrayError("input", f"input: {total} token ids exceeds the limit of {MAX_TOKENS_PER_REQUEST} "
                              "per request (summed over the inputs)", "context_length_exceeded")
    return out


def decode(encoding: Any, arrays: Sequence[Sequence[int]]) -> list[str]:
    """Token ids -> text with a tiktoken Encoding. A chunk cut inside a UTF-8 character (LangChain splits
    long texts every 8191 tokens) decodes with U+FFFD there, as tiktoken's own decode does."""
    n_vocab = int(encoding.n_vocab)
    out = []
    for i, ids in enumerate(arrays):
        for j, t in enumerate(ids):
            if t >= n_vocab:
                raise TokenArrayError(f"input[{i}]", f"input[{i}][{j}]: token id {t} is not in the tiktoken "
                                      f"encoding {encoding.name!r} (ids 0..{n_vocab - 1})")
        try:
            out.append(encoding.decode_bytes(list(ids)).decode("utf-8", errors="replace"))
        except (KeyError, ValueError) as exc:  # an id inside the range that the encoding does not define
            raise TokenArrayError(f"input[{i}]", f"input[{i}]: not decodable with the tiktoken encoding "
                                  f"{encoding.name!r} ({exc})") from None
    return out


class TokenEncodings:
    """tiktoken encodings loaded on first use, each once, off the event loop. A load that fails, or takes
    longer than LOAD_TIMEOUT_S (tiktoken's download has no timeout of its own), is answered as unavailable
    and not tried again for RETRY_AFTER_S."""

    LOAD_TIMEOUT_S = 10.0

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}
        self._loading: dict[str, asyncio.Future[Any]] = {}
        self._failed: dict[str, tuple[float, str]] = {}

    @staticmethod
    def _unavailable(name: str, reason: str) -> TokenArrayError:
        return TokenArrayError(
            "input", f"input: token arrays are decoded with the tiktoken encoding {name!r}, which this gateway "
            f"cannot load ({reason}). Pre-seed the gateway's tiktoken cache (TIKTOKEN_CACHE_DIR) with {name!r}, "
            f"{AVOID}", "token_encoding_unavailable")

    def _done(self, name: str, fut: asyncio.Future[Any]) -> None:
        self._loading.pop(name, None)
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            self._loaded[name] = fut.result()
            self._failed.pop(name, None)
        else:  # unknown name, no cache file and no network, a cache file with the wrong hash, ...
            self._failed[name] = (time.monotonic(), f"{type(exc).__name__}: {str(exc)[:200]}")

    async def get(self, name: str) -> Any:
        enc = self._loaded.get(name)
        if enc is not None:
            return enc
        failed = self._failed.get(name)
        if failed is not None and time.monotonic() - failed[0] < RETRY_AFTER_S:
            raise self._unavailable(name, failed[1])
        try:
            import tiktoken
        except ImportError:
            raise TokenArrayError("input", "input: token arrays need the tiktoken package on the gateway "
                                  f"(pip install tiktoken), {AVOID}", "token_encoding_unavailable") from None
        fut = self._loading.get(name)
        if fut is None:
            fut = asyncio.ensure_future(asyncio.to_thread(tiktoken.get_encoding, name))
            fut.add_done_callback(lambda f: self._done(name, f))
            self._loading[name] = fut
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.LOAD_TIMEOUT_S)
        except TimeoutError:
            reason = f"loading it took longer than {self.LOAD_TIMEOUT_S:g} s; no network?"
            self._failed[name] = (time.monotonic(), reason)
            raise self._unavailable(name, reason) from None
        except Exception as exc:
            raise self._unavailable(name, f"{type(exc).__name__}: {str(exc)[:200]}") from None

    async def decode(self, name: str, arrays: Sequence[Sequence[int]]) -> list[str]:
        return decode(await self.get(name), arrays)
