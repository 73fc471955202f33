"""Ranking metrics per query, as trec_eval / pytrec_eval (BEIR) compute them.

- nDCG@k: linear gain (rel / log2(rank + 1)), the ideal ranking built from all judged relevant documents;
- recall@k: relevant documents in the top k over all relevant documents;
- MRR@k: 1 / rank of the first relevant document within the top k, else 0.

A document is relevant when its relevance is >= 1. `ranked` holds distinct document ids, best first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def dcg(gains: Sequence[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    ideal = dcg(sorted((r for r in qrels.values() if r > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([max(qrels.get(d, 0), 0) for d in ranked[:k]]) / ideal


def recall_at(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    relevant = {d for d, r in qrels.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at(ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    for i, d in enumerate(ranked[:k]):
        if qrels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def score_query(ranked: Sequence[str], qrels: Mapping[str, int]) -> dict[str, float]:
    return {"ndcg@10": ndcg_at(ranked, qrels, 10), "recall@10": recall_at(ranked, qrels, 10),
            "recall@100": recall_at(ranked, qrels, 100), "mrr@10": mrr_at(ranked, qrels, 10)}


def mean_scores(per_query: Sequence[Mapping[str, float]]) -> dict[str, float]:
    if not per_query:
        return {m: 0.0 for m in METRICS}
    return {m: sum(q[m] for q in per_query) / len(per_query) for m in METRICS}


def dedupe_doc_ids(doc_ids: Sequence[str]) -> list[str]:
    """Chunk hits -> document ranking: a document keeps the rank of its best chunk."""
    return list(dict.fromkeys(doc_ids))
