"""`vien bench accents` / `python bench/accents_bench.py [CORPUS.jsonl]`: the cost of accent restoration on the
query path (target: <= 1 ms p50 per short query).

Queries: the Vietnamese texts of tests/data/langid_labelled.tsv with their diacritics stripped (short, typed
queries). Statistics: the general prior of the built default model plus the syllable counts of the sample
documents (services/vien/samples/documents.jsonl) and, when given, of a larger JSONL corpus ("text" per line;
`VIEN_BENCH_ACCENTS_CORPUS` or the first argument), since a tenant with more documents has more candidates and
bigrams to score. Times what the router does per Vietnamese query (the tenant's model
lookup, tokenising, Viterbi and forward-backward) one call at a time with time.perf_counter_ns, >= 20 passes.
Also reports how many syllables per query came back as they were written (the accented originals).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "services"))

from vien.runtime import env  # noqa: E402
from vien.runtime.config import Settings  # noqa: E402
from vien.text.accent_stats import AccentRestorer, MemoryAccentStats  # noqa: E402
from vien.text.accents import Restoration, SyllableCounts, restore, syllable_accuracy  # noqa: E402
from vien.text.langid import is_english_word  # noqa: E402
from vien_tools.eval.diacritics import strip_diacritics  # noqa: E402

QUERIES = REPO / "tests" / "data" / "langid_labelled.tsv"
SAMPLES = REPO / "services" / "vien" / "samples" / "documents.jsonl"


def _queries() -> list[tuple[str, str]]:
    """(accented original or "", typed text) of the Vietnamese rows."""
    out = []
    for i, line in enumerate(QUERIES.read_text(encoding="utf-8").splitlines()):
        if i == 0 or not line:
            continue
        lang, accented, text = line.split("\t", 2)
        if lang == "vi":
            out.append((text, strip_diacritics(text)) if accented == "1" else ("", text))
    return out


def _texts(path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [f"{r.get('title', '')}\n{r['text']}" for r in rows if r.get("text")]


def _pct(sorted_ns: list[int], q: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(q * len(sorted_ns)))] / 1e3


def _router_restore(restorer: AccentRestorer, text: str, scope: str) -> Restoration:
    """What the router does per Vietnamese query (vien_router.logic.Router._restore)."""
    return restore(text, restorer.model(scope), keep_lone=is_english_word)


def _time(restorer: AccentRestorer, scope: str, texts: list[str], passes: int) -> dict[str, Any]:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(passes):
        for t in texts:
            t0 = clock()
            _router_restore(restorer, t, scope)
            samples.append(clock() - t0)
    samples.sort()
    return {"p50_us": round(_pct(samples, 0.5), 1), "p99_us": round(_pct(samples, 0.99), 1),
            "mean_us": round(sum(samples) / len(samples) / 1e3, 1), "calls": len(samples)}


def run(ns: Any = None) -> dict[str, Any]:
    import asyncio

    corpus_arg = str(env.get("VIEN_BENCH_ACCENTS_CORPUS") or "") or (sys.argv[1] if __name__ == "__main__" and
                                                                 len(sys.argv) > 1 else "")
    stats = MemoryAccentStats()
    scopes = {"samples": _texts(SAMPLES)}
    if corpus_arg:
        scopes["corpus"] = _texts(Path(corpus_arg))
    restorer = AccentRestorer.from_models_dir(Settings.from_env().models_dir, stats)

    async def load() -> None:
        for scope, texts in scopes.items():
            await stats.add(scope, SyllableCounts().add_texts(texts))
            await restorer.refresh(scope)

    asyncio.run(load())
    rows = _queries()
    typed = [t for _, t in rows]
    out: dict[str, Any] = {"bench": "accents", "queries": str(QUERIES.relative_to(REPO)), "n_queries": len(typed),
                           "mean_syllables": round(sum(len(t.split()) for t in typed) / len(typed), 1)}
    for scope, texts in scopes.items():
        model = restorer.model(scope)
        _router_restore(restorer, typed[0], scope)  # warm the candidate cache as a running router has it
        judged = [syllable_accuracy(orig, _router_restore(restorer, t, scope).text) for orig, t in rows if orig]
        out[scope] = {"docs": len(texts), "syllables_counted": model.counts.total,
                      "distinct_bigrams": len(model.counts.bigrams),
                      "restore": _time(restorer, scope, typed, passes=20),
                      "syllable_accuracy_on_stripped_accented_rows": round(
                          sum(ok for _, ok in judged) / max(1, sum(n for n, _ in judged)), 4)}
    return out


if __name__ == "__main__":
    print(json.dumps(run(), ensure_ascii=False))
