"""Fusing dense and lexical result lists in the search service (the store's own `search_hybrid` is the
unweighted, engine-side RRF). Pure functions; deterministic: ties are broken by point id."""

from __future__ import annotations

from collections.abc import Sequence

from vien.store.base import Hit

Ranked = tuple[Sequence[Hit], float]  # one result list, best first, and its weight


def _ordered(scores: dict[str, float], payloads: dict[str, Hit]) -> list[Hit]:
    ids = sorted(scores, key=lambda i: (-scores[i], i))
    return [Hit(i, scores[i], payloads[i].payload) for i in ids]


def rrf(lists: Sequence[Ranked], k: int = 60) -> list[Hit]:
    """Weighted reciprocal rank fusion: score = Σ weight / (k + rank), rank counted from 1."""
    scores: dict[str, float] = {}
    payloads: dict[str, Hit] = {}
    for hits, weight in lists:
        for rank, h in enumerate(hits, start=1):
            scores[h.id] = scores.get(h.id, 0.0) + weight / (k + rank)
            payloads.setdefault(h.id, h)
    return _ordered(scores, payloads)


def min_max(hits: Sequence[Hit]) -> dict[str, float]:
    """Scores of one list rescaled to [0, 1] (best 1, worst 0; all 1 when they are equal), so cosine
    similarities and unbounded BM25 scores become comparable per query."""
    if not hits:
        return {}
    lo, hi = min(h.score for h in hits), max(h.score for h in hits)
    span = hi - lo
    return {h.id: (h.score - lo) / span if span > 0 else 1.0 for h in hits}


def weighted_sum(lists: Sequence[Ranked]) -> list[Hit]:
    """Σ weight · min-max normalised score / Σ weight (so a fused score stays in [0, 1], like a cosine
    similarity, and a score_threshold keeps a meaning); a candidate missing from a list scores 0 there."""
    scores: dict[str, float] = {}
    payloads: dict[str, Hit] = {}
    total = sum(weight for _, weight in lists) or 1.0
    for hits, weight in lists:
        for i, s in min_max(hits).items():
            scores[i] = scores.get(i, 0.0) + weight / total * s
        for h in hits:
            payloads.setdefault(h.id, h)
    return _ordered(scores, payloads)
