"""Paired significance tests on per-query scores of two runs over the same queries.

- `sign_flip_pvalue`: paired randomization test (Fisher / sign-flip permutation). Under "no difference" each
  query's difference b - a is as likely to have the other sign; the p-value is the share of random sign
  assignments whose |mean| is at least the observed one, counting the observed assignment itself
  ((1 + hits) / (1 + resamples)), so it is never 0: its floor is 1 / (resamples + 1).
- `bootstrap_ci`: paired bootstrap (resample queries with replacement) percentile interval of the mean
  difference.

Both are seeded (numpy PCG64), so the same inputs give the same figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_CHUNK = 1000  # resamples per vectorised step (bounds memory: chunk × n queries)


@dataclass(frozen=True)
class PairedResult:
    n: int
    mean_a: float
    mean_b: float
    diff: float          # mean(b - a)
    ci_low: float
    ci_high: float
    p_value: float


def _diffs(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired scores must be two 1-d sequences of equal length, got {x.shape} and {y.shape}")
    if x.size == 0:
        raise ValueError("no paired scores")
    return y - x


def sign_flip_pvalue(a: Sequence[float], b: Sequence[float], resamples: int = 10_000, seed: int = 0) -> float:
    d = _diffs(a, b)
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    hits = 0
    # float sums in another order differ in the last bits: a tie with the observed mean must count as a tie
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    done = 0
    while done < resamples:
        m = min(_CHUNK, resamples - done)
        signs = rng.integers(0, 2, size=(m, d.size), dtype=np.int8) * 2 - 1
        means = np.abs(signs @ d) / d.size
        hits += int(np.count_nonzero(means >= observed - tol))
        done += m
    return (hits + 1) / (resamples + 1)


def bootstrap_ci(a: Sequence[float], b: Sequence[float], resamples: int = 10_000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    d = _diffs(a, b)
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    done = 0
    while done < resamples:
        m = min(_CHUNK, resamples - done)
        idx = rng.integers(0, d.size, size=(m, d.size))
        means[done:done + m] = d[idx].mean(axis=1)
        done += m
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_test(a: Sequence[float], b: Sequence[float], resamples: int = 10_000, seed: int = 0) -> PairedResult:
    d = _diffs(a, b)
    lo, hi = bootstrap_ci(a, b, resamples, seed)
    return PairedResult(n=int(d.size), mean_a=float(np.mean(a)), mean_b=float(np.mean(b)), diff=float(d.mean()),
                        ci_low=lo, ci_high=hi, p_value=sign_flip_pvalue(a, b, resamples, seed))
