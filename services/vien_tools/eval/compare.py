"""`vien eval compare`: paired significance of the differences between `vien eval --out` runs.

Runs are grouped by set (dataset + split); within a set the first run given is the baseline and every
other run of that set is compared with it, per metric, on the per-query scores paired by query id:
mean difference, paired-bootstrap 95% CI, sign-flip permutation p-value (`stats.py`). Runs over different
query sets cannot be paired: that is an error naming both files and the ids that differ.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vien_tools.eval.metrics import METRICS
from vien_tools.eval.stats import PairedResult, paired_test


class CompareError(ValueError):
    """Run files that cannot be compared; the message names the file."""


@dataclass(frozen=True)
class Run:
    path: Path
    summary: dict[str, Any]
    scores: dict[str, dict[str, float]]   # query id -> metric -> score

    @property
    def set_name(self) -> str:
        s = self.summary
        return f"{s.get('dataset', '?')}/{s['split']}" if s.get("split") else str(s.get("dataset", "?"))

    @property
    def label(self) -> str:
        return str(self.summary.get("label") or self.summary.get("mode") or self.path.stem)


@dataclass(frozen=True)
class Comparison:
    set_name: str
    baseline: str
    candidate: str
    metric: str
    result: PairedResult


def load_run(path: str | Path) -> Run:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CompareError(f"{p}: file not found") from None
    except json.JSONDecodeError as exc:
        raise CompareError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("summary"), dict) \
            or not isinstance(data.get("per_query"), list):
        raise CompareError(f"{p}: not a `vien eval --out` file (expected 'summary' and 'per_query')")
    scores: dict[str, dict[str, float]] = {}
    for i, q in enumerate(data["per_query"]):
        if not isinstance(q, dict) or not isinstance(q.get("id"), str):
            raise CompareError(f"{p}: per_query[{i}] has no string 'id'")
        missing = [m for m in METRICS if not isinstance(q.get(m), int | float)]
        if missing:
            raise CompareError(f"{p}: per_query[{i}] (query {q['id']!r}) lacks {', '.join(missing)}")
        if q["id"] in scores:
            raise CompareError(f"{p}: query {q['id']!r} appears twice in per_query")
        scores[q["id"]] = {m: float(q[m]) for m in METRICS}
    if not scores:
        raise CompareError(f"{p}: no per-query scores")
    return Run(p, data["summary"], scores)


def _check_pairable(a: Run, b: Run) -> list[str]:
    only_a, only_b = sorted(set(a.scores) - set(b.scores)), sorted(set(b.scores) - set(a.scores))
    if only_a or only_b:
        raise CompareError(
            f"{a.path} and {b.path} ({a.set_name}) ran different query sets: {len(only_a)} only in the first "
            f"(e.g. {only_a[:3]}), {len(only_b)} only in the second (e.g. {only_b[:3]}); compare runs of the "
            "same queries (same --limit-queries)")
    return sorted(a.scores)


def compare_runs(runs: list[Run], resamples: int = 10_000, seed: int = 0) -> list[Comparison]:
    if len(runs) < 2:
        raise CompareError("give at least two run files")
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.set_name, []).append(r)
    lonely = [name for name, rs in groups.items() if len(rs) < 2]
    if lonely:
        raise CompareError(f"set(s) {', '.join(lonely)} have a single run: nothing to compare it with")
    out: list[Comparison] = []
    for name, rs in groups.items():
        base = rs[0]
        for cand in rs[1:]:
            ids = _check_pairable(base, cand)
            for m in METRICS:
                a = [base.scores[i][m] for i in ids]
                b = [cand.scores[i][m] for i in ids]
                out.append(Comparison(name, base.label, cand.label, m, paired_test(a, b, resamples, seed)))
    return out


def markdown_table(comps: list[Comparison], resamples: int, seed: int) -> str:
    lines = [
        f"Paired over queries: difference = candidate − baseline; 95% CI: paired bootstrap; p: sign-flip "
        f"permutation test ({resamples} resamples, seed {seed}).",
        "",
        "| set | baseline | candidate | metric | n | baseline | candidate | diff | 95% CI | p |",
        "|---|---|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for c in comps:
        r = c.result
        p = f"{r.p_value:.4f}" if r.p_value >= 1e-4 else f"{r.p_value:.1e}"
        lines.append(f"| {c.set_name} | {c.baseline} | {c.candidate} | {c.metric} | {r.n} | {r.mean_a:.4f} | "
                     f"{r.mean_b:.4f} | {r.diff:+.4f} | [{r.ci_low:+.4f}, {r.ci_high:+.4f}] | {p} |")
    return "\n".join(lines) + "\n"


def plot_png(comps: list[Comparison], path: str | Path) -> None:
    """One panel per metric: a bar per (set, candidate vs baseline) = mean difference, whiskers = 95% CI."""
    try:
        import matplotlib
    except ImportError:
        raise CompareError("--png needs matplotlib: pip install 'vien[eval]'") from None
    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    metrics = [m for m in METRICS if any(c.metric == m for c in comps)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.9 + 0.45 * max(
        1, len(comps) // max(1, len(metrics)))), squeeze=False, sharey=True)
    for ax, m in zip(axes[0], metrics, strict=True):
        rows = [c for c in comps if c.metric == m]
        labels = [f"{c.set_name}: {c.candidate} vs {c.baseline}" for c in rows]
        diffs = [c.result.diff for c in rows]
        err = [[c.result.diff - c.result.ci_low for c in rows], [c.result.ci_high - c.result.diff for c in rows]]
        colors = ["#2a7" if c.result.ci_low > 0 else "#c44" if c.result.ci_high < 0 else "#999" for c in rows]
        y = list(range(len(rows)))[::-1]
        ax.barh(y, diffs, xerr=err, color=colors, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, labels)
        ax.set_title(m)
        ax.set_xlabel("difference (95% CI)")
        for yi, c in zip(y, rows, strict=True):
            ax.annotate(f"p={c.result.p_value:.3g}", (c.result.ci_high, yi), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
