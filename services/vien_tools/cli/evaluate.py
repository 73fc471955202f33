"""`vien eval` (retrieval quality of a dataset) and `vien eval compare` (paired significance between runs)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path


def _fail(exc: Exception) -> Exception:
    from vien_tools.cli.errors import CliError

    return CliError(str(exc))


def _cmd_eval(ns: argparse.Namespace) -> int:
    if ns.eval_cmd == "compare":
        return _cmd_compare(ns)
    if not ns.dataset:
        raise _fail(ValueError("--dataset DIR is required (or: vien eval compare A.json B.json)"))
    from vien.runtime.config import Settings
    from vien_tools.build.setup import ensure_builtin_models
    from vien_tools.eval.datasets import DatasetError
    from vien_tools.eval.eval_config import EvalConfigError
    from vien_tools.eval.runner import EvalError, EvalOptions, EvalRun, default_cache_dir

    if ns.limit_queries < 0:
        raise _fail(ValueError(f"--limit-queries: {ns.limit_queries} must be >= 0"))
    if ns.out:
        out = Path(ns.out)
        if not out.parent.is_dir():
            raise _fail(ValueError(f"--out: directory {out.parent} does not exist"))
    settings = Settings.from_env()
    opts = EvalOptions(
        dataset=Path(ns.dataset), split=ns.split, profile=ns.profile, mode=ns.mode, dims=ns.dims,
        query_encoder=ns.query_encoder, doc_prompt=ns.doc_prompt, query_prompt=ns.query_prompt,
        strip_diacritics=ns.strip_diacritics, limit_queries=ns.limit_queries,
        restore_accents=not ns.no_accent_restoration,
        cache_dir=None if ns.no_cache else Path(ns.cache_dir) if ns.cache_dir else default_cache_dir(),
        label=ns.label, concurrency=ns.concurrency, progress=not ns.no_progress)
    try:
        run = EvalRun(opts, settings)
        ensure_builtin_models(settings)
        result = asyncio.run(run.run())
    except (DatasetError, EvalConfigError, EvalError) as exc:
        raise _fail(exc) from None
    if ns.out:
        Path(ns.out).write_text(json.dumps(result, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result["summary"], ensure_ascii=False))
    return 0


def _cmd_compare(ns: argparse.Namespace) -> int:
    from vien_tools.eval.compare import CompareError, compare_runs, load_run, markdown_table, plot_png

    if ns.resamples < 100:
        raise _fail(ValueError(f"--resamples: {ns.resamples} is too few; use at least 100 (default 10000)"))
    try:
        runs = [load_run(p) for p in ns.runs]
        comps = compare_runs(runs, ns.resamples, ns.seed)
    except (CompareError, ValueError) as exc:
        raise _fail(exc) from None
    table = markdown_table(comps, ns.resamples, ns.seed)
    sys.stdout.write(table)
    if ns.md:
        Path(ns.md).write_text(table, encoding="utf-8")
    if ns.png:
        plot_png(comps, ns.png)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    ev = subparsers.add_parser(
        "eval", help="retrieval quality on a dataset (nDCG@10, recall, MRR; last line one JSON object)",
        description="Index DIR/corpus.jsonl and run DIR[/SPLIT]/queries.jsonl through the services' own "
        "ingest, router, embedders and search logic in this process; score against qrels.tsv.")
    ev.add_argument("--dataset", default="", help="dataset directory (corpus.jsonl, [SPLIT/]queries.jsonl, qrels.tsv)")
    ev.add_argument("--split", default="", help="read DIR/SPLIT/queries.jsonl and DIR/SPLIT/qrels.tsv")
    ev.add_argument("--profile", default="", help="evaluate this profile only (default: route by language)")
    ev.add_argument("--mode", default="dense", choices=["dense", "hybrid", "sparse"])
    ev.add_argument("--dims", type=int, default=0, help="truncate to N dims (MRL; the corpus is indexed at N too)")
    ev.add_argument("--query-encoder", default="", help="replace the profile's query encoder (an encoder name "
                    "of the config, e.g. e5-small-int8)")
    ev.add_argument("--doc-prompt", default="", help="replace every profile's document prompt, e.g. "
                    "'query: {text}' (documents embedded as queries, as clients that cannot tell them apart do)")
    ev.add_argument("--query-prompt", default="", help="replace every profile's query prompt, e.g. "
                    "'passage: {text}'")
    ev.add_argument("--strip-diacritics", action="store_true", help="remove Vietnamese diacritics from the queries")
    ev.add_argument("--no-accent-restoration", action="store_true",
                    help="embed unaccented Vietnamese queries as typed (no accent restoration)")
    ev.add_argument("--limit-queries", type=int, default=0, help="only the first N judged queries")
    ev.add_argument("--out", default="", help="write the summary and per-query scores to this JSON file")
    ev.add_argument("--label", default="", help="name of this run in `vien eval compare` (default: from options)")
    ev.add_argument("--cache-dir", default="", help="corpus embedding cache (default $VIEN_DATA_DIR/eval or "
                    "~/.cache/vien/eval)")
    ev.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    ev.add_argument("--concurrency", type=int, default=8, help="queries in flight")
    ev.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")
    ev.set_defaults(fn=_cmd_eval, eval_cmd=None)

    sub = ev.add_subparsers(dest="eval_cmd", metavar="compare")
    c = sub.add_parser("compare", help="paired significance tests between `vien eval --out` files",
                       description="Per set (dataset/split), the first file is the baseline; each other file of "
                       "the set is compared with it per metric: difference, paired-bootstrap 95% CI, sign-flip "
                       "permutation p-value. Prints a markdown table.")
    c.add_argument("runs", nargs="+", help="`vien eval --out` JSON files")
    c.add_argument("--md", default="", help="also write the markdown table here")
    c.add_argument("--png", default="", help="plot of the differences with their CIs (PNG)")
    c.add_argument("--resamples", type=int, default=10_000)
    c.add_argument("--seed", type=int, default=0)
    return ev
