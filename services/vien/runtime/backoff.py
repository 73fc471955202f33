"""Exponential back-off, one rule for every retry loop (ingest batches, the OpenAI/vLLM client, the space guard,
`vien up` restarts): the n-th delay is min(cap, base x 2^n), of which the top `jitter` share is random, so
callers that failed together do not retry together (1.0 = "full jitter", uniform over 0..d; 0 = none)."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base: float, cap: float, jitter: float = 1.0) -> float:
    d = min(cap, base * 2 ** min(attempt, 32))
    return d * (1.0 - jitter * random.random())


class Backoff:
    """Stateful back-off for a loop: `next()` gives the next delay, `reset()` starts again after a success."""

    def __init__(self, base: float = 0.2, cap: float = 30.0, jitter: float = 1.0) -> None:
        self.base, self.cap, self.jitter, self.attempt = base, cap, jitter, 0

    def next(self) -> float:
        self.attempt += 1
        return backoff_delay(self.attempt, self.base, self.cap, self.jitter)

    def reset(self) -> None:
        self.attempt = 0
