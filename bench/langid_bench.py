"""`vien bench langid` / `python bench/langid_bench.py`: accuracy and cost of the router's language id.

Loads tests/data/langid_labelled.tsv (lang, accented, text), reports per-class accuracy of
vien.text.langid.detect, its per-text cost (mean and p99 microseconds over >= 10 passes, measured
with time.perf_counter_ns one call at a time), and, for comparison, plain py3langid restricted to
vi/en on the same texts (what the rules buy). Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data" / "langid_labelled.tsv"
sys.path.insert(0, str(REPO / "services"))

from vien.text import langid  # noqa: E402


def load(path: Path = DATA) -> list[tuple[str, str, str]]:
    """(class, gold lang, text); class is vi_accented, vi_unaccented, en or other."""
    rows = []
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            line = line.rstrip("\n")
            if not line or (i == 0 and line.startswith("lang\t")):
                continue
            lang, accented, text = line.split("\t", 2)
            cls = lang if lang != "vi" else ("vi_accented" if accented == "1" else "vi_unaccented")
            rows.append((cls, lang, text))
    return rows


def _accuracy(rows: list[tuple[str, str, str]], predict: Callable[[str], str]) -> dict[str, Any]:
    ok: Counter[str] = Counter()
    tot: Counter[str] = Counter()
    for cls, lang, text in rows:
        tot[cls] += 1
        ok[cls] += predict(text) == lang
    out: dict[str, Any] = {
        c: {"n": tot[c], "correct": ok[c], "accuracy": round(ok[c] / tot[c], 4)} for c in sorted(tot)
    }
    out["overall"] = round(sum(ok.values()) / max(1, sum(tot.values())), 4)
    return out


def _raw_py3langid_vi_en() -> Callable[[str], str]:
    from py3langid import langid as pl

    cls = pl.LanguageIdentifier
    ident = (
        cls.from_model_file(pl.MODEL_FILE, norm_probs=True)
        if hasattr(cls, "from_model_file")
        else cls.from_pickled_model(pl.MODEL_FILE, norm_probs=True)
    )
    ident.set_languages(["vi", "en"])
    return lambda text: str(ident.classify(text)[0])


def run(ns: Any = None, passes: int = 20) -> dict[str, Any]:
    passes = max(10, int(getattr(ns, "passes", passes) or passes))
    rows = load()
    texts = [t for _, _, t in rows]
    detect = langid.detect
    for t in texts:  # warm-up
        detect(t)

    samples: list[int] = []
    clock = time.perf_counter_ns
    for _ in range(passes):
        for t in texts:
            t0 = clock()
            detect(t)
            samples.append(clock() - t0)
    samples.sort()
    mean_us = sum(samples) / len(samples) / 1e3
    p50_us = samples[len(samples) // 2] / 1e3
    p99_us = samples[min(len(samples) - 1, int(len(samples) * 0.99))] / 1e3

    calls = [0]
    real_rank = langid._langid_rank

    def counting_rank(text: str) -> tuple[str, float, float, float]:
        calls[0] += 1
        return real_rank(text)

    langid._langid_rank = counting_rank
    try:
        for t in texts:
            detect(t)
    finally:
        langid._langid_rank = real_rank

    raw = _raw_py3langid_vi_en()
    raw_samples: list[int] = []
    for t in texts:
        t0 = clock()
        raw(t)
        raw_samples.append(clock() - t0)

    return {
        "bench": "langid",
        "dataset": str(DATA.relative_to(REPO)),
        "n_texts": len(rows),
        "accuracy": _accuracy(rows, detect),
        "cost_us_per_text": {
            "mean": round(mean_us, 2),
            "p50": round(p50_us, 2),
            "p99": round(p99_us, 2),
            "passes": passes,
            "calls": len(samples),
        },
        "py3langid_fallback_rate": round(calls[0] / max(1, len(texts)), 4),
        "baseline_py3langid_vi_en": {
            "note": "py3langid restricted to vi/en, no rules ('other' texts can only be wrong)",
            "accuracy": _accuracy(rows, raw),
            "mean_us_per_text": round(sum(raw_samples) / len(raw_samples) / 1e3, 2),
        },
    }


if __name__ == "__main__":
    print(json.dumps(run(), ensure_ascii=False))
