"""A circuit breaker for a remote dependency (the doc-embedder's vLLM/OpenAI backend).

closed    -> calls go through; `failures` consecutive failures open it.
open      -> calls fail fast (the caller raises UNAVAILABLE) until `cooldown_s` has passed.
half_open -> after the cool-down exactly one call (a real request or a background probe) is let
             through; success closes the breaker, failure opens it again for a longer cool-down
             (doubled each time, capped at `max_cooldown_s`).

Plain logic with an injected clock, so it is tested without sleeping. Not thread-safe: it lives on
one asyncio loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, name: str, failures: int = 5, cooldown_s: float = 5.0, max_cooldown_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[CircuitBreaker, State, State], None] | None = None) -> None:
        if failures < 1 or cooldown_s <= 0 or max_cooldown_s < cooldown_s:
            raise ValueError("failures >= 1 and 0 < cooldown_s <= max_cooldown_s are required")
        self.name = name
        self.threshold = failures
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self.clock = clock
        self.on_change = on_change
        self.state: State = "closed"
        self.consecutive_failures = 0
        self.cooldown_s = cooldown_s
        self.opened_at = 0.0
        self.opens = 0                 # times it opened (tests, metrics)
        self._probe_in_flight = False

    # ------------------------------------------------------------------ queries
    def retry_in(self) -> float:
        """Seconds until a probe may go through (0 when closed or due)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.opened_at + self.cooldown_s - self.clock())

    def allow(self) -> bool:
        """May a call go through now? In half-open, True for exactly one caller (the probe)."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if self.retry_in() > 0:
                return False
            self._set("half_open")
        if self._probe_in_flight:
            return False
        self._probe_in_flight = True
        return True

    # ------------------------------------------------------------------ outcomes
    def record_success(self) -> None:
        self.consecutive_failures = 0
        self._probe_in_flight = False
        self.cooldown_s = self.base_cooldown_s
        if self.state != "closed":
            self._set("closed")

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        if self.state == "half_open":
            self._probe_in_flight = False
            self.cooldown_s = min(self.max_cooldown_s, self.cooldown_s * 2)
            self._open()
        elif self.state == "closed" and self.consecutive_failures >= self.threshold:
            self._open()

    def release(self) -> None:
        """The call that held the probe slot ended without a verdict (cancelled): let another probe try."""
        self._probe_in_flight = False

    # ------------------------------------------------------------------ internals
    def _open(self) -> None:
        self.opened_at = self.clock()
        self.opens += 1
        self._set("open")

    def _set(self, state: State) -> None:
        old, self.state = self.state, state
        if old != state and self.on_change is not None:
            self.on_change(self, old, state)
