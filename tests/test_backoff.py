"""The one back-off rule (vien.runtime.backoff) every retry loop uses."""

from __future__ import annotations

from vien.runtime.backoff import Backoff, backoff_delay


def test_delays_double_up_to_the_cap_with_the_jitter_share_random() -> None:
    assert [backoff_delay(n, 0.5, 30.0, jitter=0.0) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    for n in range(12):
        d = min(30.0, 0.2 * 2 ** n)
        full = [backoff_delay(n, 0.2, 30.0) for _ in range(200)]
        half = [backoff_delay(n, 0.2, 30.0, jitter=0.5) for _ in range(200)]
        assert all(0 <= x <= d for x in full) and min(full) < d / 2 < max(full)
        assert all(d / 2 <= x <= d for x in half)
    assert backoff_delay(10_000, 0.2, 5.0, jitter=0.0) == 5.0  # no overflow for a long outage


def test_the_stateful_form_counts_attempts_and_resets() -> None:
    b = Backoff(1.0, 8.0, jitter=0.0)
    assert [b.next() for _ in range(5)] == [2.0, 4.0, 8.0, 8.0, 8.0]
    b.reset()
    assert b.next() == 2.0
