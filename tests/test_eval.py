"""The evaluation harness: metrics on hand-built rankings, the paired statistics on synthetic cases whose answer
is known, dataset errors, and `vien eval` / `vien eval compare` end to end on a tiny synthetic dataset written
here (the real eval sets are never used in tests) through the real ONNX model, ingest processor, Qdrant Edge,
router and search logic."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vien.runtime.config import load_config
from vien_tools.cli.main import main
from vien_tools.eval.compare import CompareError, compare_runs, load_run, markdown_table, plot_png
from vien_tools.eval.datasets import DatasetError, load_dataset
from vien_tools.eval.diacritics import strip_diacritics
from vien_tools.eval.eval_config import EvalConfigError, derive_configs
from vien_tools.eval.metrics import dedupe_doc_ids, mrr_at, ndcg_at, recall_at, score_query
from vien_tools.eval.runner import EvalError, _search_kwargs
from vien_tools.eval.stats import bootstrap_ci, paired_test, sign_flip_pvalue

# ----------------------------------------------------------------------------------------------- metrics


def test_metrics_on_hand_built_rankings():
    qrels = {"a": 2, "b": 1, "z": 1}          # z is never retrieved
    ranked = ["x", "a", "y", "b"]
    # DCG = 2/log2(3) + 1/log2(5); ideal = 2/log2(2) + 1/log2(3) + 1/log2(4)
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    ideal = 2 + 1 / math.log2(3) + 0.5
    assert ndcg_at(ranked, qrels, 10) == pytest.approx(dcg / ideal)
    assert recall_at(ranked, qrels, 10) == pytest.approx(2 / 3)
    assert recall_at(ranked, qrels, 2) == pytest.approx(1 / 3)
    assert mrr_at(ranked, qrels, 10) == pytest.approx(0.5)
    assert mrr_at(ranked, qrels, 1) == 0.0
    # the perfect ranking scores 1 everywhere; relevance 0 judgments count as not relevant
    perfect = score_query(["a", "b", "z"], {**qrels, "n": 0})
    assert perfect == {"ndcg@10": pytest.approx(1.0), "recall@10": 1.0, "recall@100": 1.0, "mrr@10": 1.0}
    assert score_query(["n", "x"], {"a": 1, "n": 0}) == {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0,
                                                         "mrr@10": 0.0}
    # a relevant document at rank 11 counts for recall@100 only
    deep = [f"x{i}" for i in range(10)] + ["a"]
    assert score_query(deep, {"a": 1}) == {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 1.0, "mrr@10": 0.0}


def test_chunk_hits_reduce_to_documents_at_their_best_rank():
    assert dedupe_doc_ids(["d2", "d1", "d2", "d3", "d1"]) == ["d2", "d1", "d3"]


def test_strip_diacritics_vietnamese():
    assert strip_diacritics("Đường phố Hà Nội đẹp quá, ỷ ĩ ự") == "Duong pho Ha Noi dep qua, y i u"
    assert strip_diacritics("plain English") == "plain English"


# ----------------------------------------------------------------------------------------------- statistics


def test_identical_runs_have_p_one_and_zero_difference():
    a = list(np.random.default_rng(1).random(200))
    r = paired_test(a, a, resamples=2000)
    assert r.p_value == 1.0 and r.diff == 0.0 and r.ci_low == 0.0 and r.ci_high == 0.0


def test_constant_shift_reaches_the_p_floor_and_the_ci_is_the_shift():
    a = np.random.default_rng(2).random(100)
    b = a + 0.05
    r = paired_test(a, b, resamples=10_000)
    assert r.p_value == pytest.approx(1 / 10_001)
    assert r.diff == pytest.approx(0.05)
    assert r.ci_low == pytest.approx(0.05) and r.ci_high == pytest.approx(0.05)
    # direction matters for the difference, not for the (two-sided) p-value
    r2 = paired_test(b, a, resamples=10_000)
    assert r2.diff == pytest.approx(-0.05) and r2.p_value == r.p_value


def test_noise_without_effect_gives_uniform_p_values_and_cis_covering_zero():
    rng = np.random.default_rng(3)
    ps, covered = [], 0
    trials = 200
    for t in range(trials):
        a = rng.random(60)
        b = a + rng.normal(0.0, 0.1, 60)  # no effect: zero-mean noise
        ps.append(sign_flip_pvalue(a, b, resamples=500, seed=t))
        lo, hi = bootstrap_ci(a, b, resamples=500, seed=t)
        covered += lo <= 0.0 <= hi
    ps_arr = np.array(ps)
    # Uniform under the null: ~5% below 0.05, ~half below 0.5 (binomial bounds for 200 trials, with slack)
    assert 0.0 <= np.mean(ps_arr < 0.05) <= 0.11
    assert 0.38 <= np.mean(ps_arr < 0.5) <= 0.62
    assert covered / trials >= 0.88


def test_real_effect_in_noise_is_detected():
    rng = np.random.default_rng(4)
    a = rng.random(300)
    b = a + 0.03 + rng.normal(0.0, 0.1, 300)
    r = paired_test(a, b, resamples=5000)
    assert r.p_value < 0.01 and r.ci_low > 0 and r.ci_low < r.diff < r.ci_high


def test_paired_stats_reject_unequal_lengths():
    with pytest.raises(ValueError, match="equal length"):
        paired_test([0.1, 0.2], [0.1], resamples=100)


def test_stats_are_seeded():
    rng = np.random.default_rng(5)
    a, b = rng.random(50), rng.random(50)
    assert paired_test(a, b, 1000, seed=7) == paired_test(a, b, 1000, seed=7)


# ----------------------------------------------------------------------------------------------- datasets

DOCS = [
    ("d1", "Phở là món ăn truyền thống của Việt Nam, gồm bánh phở, nước dùng và thịt bò thái mỏng.", "vi"),
    ("d2", "Hà Nội là thủ đô của Việt Nam, nằm bên bờ sông Hồng ở đồng bằng Bắc Bộ.", "vi"),
    ("d3", "Vịnh Hạ Long ở tỉnh Quảng Ninh nổi tiếng với hàng nghìn hòn đảo đá vôi.", "vi"),
    ("d4", "Cà phê sữa đá là thức uống phổ biến ở Sài Gòn vào buổi sáng.", "vi"),
    ("d5", "Áo dài là trang phục truyền thống của phụ nữ Việt Nam.", "vi"),
    ("d6", "The Eiffel Tower is a wrought-iron lattice tower in Paris, France, built in 1889.", "en"),
    ("d7", "Photosynthesis converts light energy into chemical energy stored in glucose.", "en"),
    ("d8", "The Python programming language emphasizes code readability and simplicity.", "en"),
    ("d9", "Mount Everest is the highest mountain above sea level, in the Himalayas.", "en"),
    ("d10", "The Great Barrier Reef off Australia is the largest coral reef system in the world.", "en"),
    ("d11", "Penguins are flightless seabirds that live almost exclusively in the Southern Hemisphere.", "en"),
    ("d12", "A bicycle has two wheels, pedals and a chain that drives the rear wheel.", "en"),
]
QUERIES = [
    ("q1", "Phở được nấu từ những nguyên liệu gì?", "vi", "d1"),
    ("q2", "Thủ đô của Việt Nam là thành phố nào?", "vi", "d2"),
    ("q3", "Vịnh Hạ Long nằm ở tỉnh nào?", "vi", "d3"),
    ("q4", "Người Sài Gòn uống gì vào buổi sáng?", "vi", "d4"),
    ("q5", "Trang phục truyền thống của phụ nữ Việt Nam là gì?", "vi", "d5"),
    ("q6", "When was the Eiffel Tower built?", "en", "d6"),
    ("q7", "How do plants turn sunlight into chemical energy?", "en", "d7"),
    ("q8", "Which programming language focuses on readable code?", "en", "d8"),
    ("q9", "What is the highest mountain on Earth?", "en", "d9"),
    ("q10", "Where is the largest coral reef?", "en", "d10"),
    ("q11", "Which seabirds cannot fly?", "en", "d11"),
    ("q12", "How does a bicycle chain work?", "en", "d12"),
]


def write_dataset(root: Path, split: str = "dev", extra_qrels: str = "") -> Path:
    qdir = root / split if split else root
    qdir.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": t, "lang": lg}, ensure_ascii=False) + "\n" for i, t, lg in DOCS),
        encoding="utf-8")
    (qdir / "queries.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": t, "lang": lg}, ensure_ascii=False) + "\n" for i, t, lg, _ in QUERIES),
        encoding="utf-8")
    (qdir / "qrels.tsv").write_text("query_id\tdoc_id\trelevance\n" + "".join(
        f"{i}\t{d}\t1\n" for i, _, _, d in QUERIES) + extra_qrels, encoding="utf-8")
    return root


def test_dataset_loads_with_and_without_split(tmp_path):
    ds = load_dataset(write_dataset(tmp_path / "a"), "dev")
    assert len(ds.corpus) == 12 and len(ds.queries) == 12 and ds.qrels["q3"] == {"d3": 1}
    flat = load_dataset(write_dataset(tmp_path / "b", split=""))
    assert flat.split == "" and len(flat.judged_queries()) == 12


def test_unknown_ids_in_qrels_are_counted_not_scored(tmp_path):
    ds = load_dataset(write_dataset(tmp_path, extra_qrels="qX\td1\t1\nq1\tdX\t2\nqY\tdY\t1\n"), "dev")
    assert ds.unknown.as_dict() == {"rows": 3, "query_ids": 2, "doc_ids": 2}
    assert ds.qrels["q1"] == {"d1": 1}


@pytest.mark.parametrize("mutate, message", [
    (lambda r: (r / "corpus.jsonl").unlink(), r"corpus\.jsonl: file not found"),
    (lambda r: (r / "dev" / "qrels.tsv").unlink(), r"dev/qrels\.tsv: file not found"),
    (lambda r: (r / "corpus.jsonl").write_text('{"id": "d1", "text": "ok"}\n{"id": "d2", "text": \n'),
     r"corpus\.jsonl:2: not valid JSON"),
    (lambda r: (r / "corpus.jsonl").write_text('{"id": "d1", "text": "ok"}\n{"text": "no id"}\n'),
     r"corpus\.jsonl:2: field 'id' is missing"),
    (lambda r: (r / "dev" / "queries.jsonl").write_text('{"id": "q1", "text": "fine"}\n\n{"id": "q2"}\n'),
     r"queries\.jsonl:3: field 'text' is missing or empty"),
    (lambda r: (r / "dev" / "queries.jsonl").write_text('{"id": "q1", "text": 5}\n'),
     r"queries\.jsonl:1: field 'text' is not a string \(int\)"),
    (lambda r: (r / "dev" / "queries.jsonl").write_text('["a list"]\n'),
     r"queries\.jsonl:1: expected a JSON object, got list"),
    (lambda r: (r / "corpus.jsonl").write_text('{"id": "d1", "text": "a"}\n{"id": "d1", "text": "b"}\n'),
     r"corpus\.jsonl:2: duplicate document id 'd1'"),
    (lambda r: (r / "dev" / "qrels.tsv").write_text("query_id\tdoc_id\trelevance\nq1\td1\n"),
     r"qrels\.tsv:2: expected 3 tab-separated columns"),
    (lambda r: (r / "dev" / "qrels.tsv").write_text("query_id\tdoc_id\trelevance\nq1\td1\thigh\n"),
     r"qrels\.tsv:2: relevance 'high' is not an integer"),
])
def test_bad_dataset_files_name_file_and_line(tmp_path, mutate, message):
    root = write_dataset(tmp_path)
    mutate(root)
    with pytest.raises(DatasetError, match=message):
        load_dataset(root, "dev")


def test_missing_split_and_directory(tmp_path):
    root = write_dataset(tmp_path)
    with pytest.raises(DatasetError, match=r"split 'test' not found \(splits here: dev\)"):
        load_dataset(root, "test")
    with pytest.raises(DatasetError, match="dataset directory not found"):
        load_dataset(tmp_path / "nope")


# ----------------------------------------------------------------------------------------------- configs


def test_eval_configs_dims_and_query_encoder():
    base = load_config()
    c = derive_configs(base, "e5-small", "e5-small-int8", 256)
    assert c.index.profiles["e5-small"].dims == 256
    assert c.index.profiles["e5-small"].collection == "vien_e5_small_d256"
    assert c.queries.profiles["e5-small"].query_encoder == "e5-small-int8"
    assert c.docs.profiles["e5-small"] == base.profiles["e5-small"]  # the document side is untouched
    with pytest.raises(EvalConfigError, match=r"--dims: profile 'e5-small': 64 is out of range; allowed 128..384"):
        derive_configs(base, dims=64)
    with pytest.raises(EvalConfigError, match=r"--query-encoder: unknown encoder 'nope'"):
        derive_configs(base, query_encoder="nope")
    with pytest.raises(EvalConfigError, match=r"--profile: unknown profile 'nope'"):
        derive_configs(base, profile="nope")


def test_eval_configs_replace_prompts():
    base = load_config()
    c = derive_configs(base, doc_prompt="query: {text}", query_prompt="passage: {text}")
    for view in (c.docs, c.queries, c.index):
        p = view.profiles["e5-small"]
        assert p.prompt("document", "x") == "query: x" and p.prompt("query", "x") == "passage: x"
    assert base.profiles["e5-small"].prompt("document", "x") == "passage: x"  # the base is untouched
    with pytest.raises(EvalConfigError, match=r"--doc-prompt: 'query:' has no \{text\} placeholder"):
        derive_configs(base, doc_prompt="query:")
    with pytest.raises(EvalConfigError, match=r"--query-prompt"):
        derive_configs(base, query_prompt="q")


def test_search_mode_is_named_only_where_search_has_modes():
    class DenseOnly:
        async def search(self, query: str, tenant: str, top_k: int = 0) -> None: ...

    class WithModes:
        async def search(self, query: str, tenant: str, top_k: int = 0, mode: str = "") -> None: ...

    assert _search_kwargs(DenseOnly(), "dense") == {}  # type: ignore[arg-type]
    with pytest.raises(EvalError, match="--mode hybrid: this build's search has no lexical"):
        _search_kwargs(DenseOnly(), "hybrid")  # type: ignore[arg-type]
    # a profile's default mode may be hybrid: dense is asked for by name
    assert _search_kwargs(WithModes(), "dense") == {"mode": "dense"}  # type: ignore[arg-type]
    assert _search_kwargs(WithModes(), "sparse") == {"mode": "sparse"}  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- end to end


def vien(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vien_tools", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def e2e(tmp_path_factory, models_dir):
    """One dense run and one unaccented-query run of the synthetic set, sharing the embedding cache."""
    tmp = tmp_path_factory.mktemp("eval")
    root = write_dataset(tmp / "tiny", extra_qrels="q1\tdX\t1\n")
    cache = tmp / "cache"
    runs = {}
    for name, extra in (("dense", []), ("unaccented", ["--strip-diacritics"])):
        out = tmp / f"{name}.json"
        p = vien("eval", "--dataset", str(root), "--split", "dev", "--cache-dir", str(cache), "--out", str(out),
                 "--no-progress", *extra)
        assert p.returncode == 0, p.stderr
        runs[name] = (json.loads(p.stdout.strip().splitlines()[-1]), out, p.stderr)
    return tmp, runs


def test_eval_end_to_end_dense(e2e):
    _, runs = e2e
    s, out, stderr = runs["dense"]
    assert s["mode"] == "dense" and s["profile"] == "e5-small" and s["dataset"] == "tiny" and s["split"] == "dev"
    assert s["n_queries"] == 12 and s["n_docs"] == 12 and s["docs_not_indexed"] == 0 and s["dims"] == 384
    assert s["unknown_qrels"] == {"rows": 1, "query_ids": 0, "doc_ids": 1}
    assert "1 judgment(s) name unknown ids" in stderr
    for m in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
        assert 0.0 <= s[m] <= 1.0
    # obvious queries: each finds its own document first (or at worst second)
    assert s["mrr@10"] >= 0.9 and s["recall@10"] == 1.0
    assert s["langid_accuracy"] >= 0.9 and set(s["langid_confusion"]) == {"vi", "en"}
    assert s["by_lang"]["vi"]["n"] == 5 and s["by_lang"]["en"]["n"] == 7
    per_query = json.loads(out.read_text())["per_query"]
    assert {q["id"] for q in per_query} == {q[0] for q in QUERIES}
    q6 = next(q for q in per_query if q["id"] == "q6")
    assert q6["top10"][0] == "d6" and q6["mrr@10"] == 1.0 and len(q6["top10"]) == 10
    assert s["embedding_cache"]["encoded"] + s["embedding_cache"]["hits"] == 12


def test_eval_second_run_reads_corpus_embeddings_from_cache(e2e):
    _, runs = e2e
    s = runs["unaccented"][0]
    assert s["embedding_cache"] == {**s["embedding_cache"], "hits": 12, "encoded": 0}
    assert s["strip_diacritics"] is True and s["label"] == "dense unaccented"
    assert s["recall@100"] == 1.0  # every document is in the top 100 of a 12-document corpus


def test_eval_compare_table_and_png(e2e):
    tmp, runs = e2e
    md, png = tmp / "cmp.md", tmp / "cmp.png"
    p = vien("eval", "compare", str(runs["dense"][1]), str(runs["unaccented"][1]), "--md", str(md),
             "--png", str(png), "--resamples", "2000")
    assert p.returncode == 0, p.stderr
    rows = [line for line in p.stdout.splitlines() if line.startswith("| tiny/dev |")]
    assert len(rows) == 4 and all("| dense | dense unaccented |" in r for r in rows)
    assert md.read_text() == p.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    # the same run against itself: no difference, p = 1
    same = compare_runs([load_run(runs["dense"][1]), load_run(runs["dense"][1])], resamples=500)
    assert all(c.result.diff == 0.0 and c.result.p_value == 1.0 for c in same)


def test_eval_compare_rejects_mismatched_query_sets(e2e, tmp_path):
    _, runs = e2e
    data = json.loads(runs["dense"][1].read_text())
    data["per_query"] = data["per_query"][:-1]
    short = tmp_path / "short.json"
    short.write_text(json.dumps(data))
    with pytest.raises(CompareError, match=r"ran different query sets: 1 only in the first"):
        compare_runs([load_run(runs["dense"][1]), load_run(short)], resamples=200)
    p = vien("eval", "compare", str(runs["dense"][1]), str(short))
    assert p.returncode == 1 and "different query sets" in p.stderr and "Traceback" not in p.stderr


def test_compare_table_and_plot_from_synthetic_runs(tmp_path):
    rng = np.random.default_rng(6)
    base = rng.random(80)

    def run_file(name: str, dataset: str, scores: np.ndarray) -> Path:
        pq = [{"id": f"q{i}", **{m: float(v) for m in ("ndcg@10", "recall@10", "recall@100", "mrr@10")}}
              for i, v in enumerate(scores)]
        p = tmp_path / f"{dataset}-{name}.json"
        p.write_text(json.dumps({"summary": {"dataset": dataset, "split": "dev", "label": name}, "per_query": pq}))
        return p

    files = [run_file("dense", "s1", base), run_file("hybrid", "s1", np.clip(base + 0.1, 0, 1)),
             run_file("dense", "s2", base), run_file("hybrid", "s2", base)]
    comps = compare_runs([load_run(f) for f in files], resamples=1000)
    assert len(comps) == 8
    s1 = next(c for c in comps if c.set_name == "s1/dev" and c.metric == "ndcg@10")
    s2 = next(c for c in comps if c.set_name == "s2/dev" and c.metric == "ndcg@10")
    assert s1.result.diff > 0.05 and s1.result.p_value < 0.01 and s2.result.p_value == 1.0
    table = markdown_table(comps, 1000, 0)
    assert table.count("\n| s1/dev | dense | hybrid |") == 4
    plot_png(comps, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(CompareError, match="single run"):
        compare_runs([load_run(files[0]), load_run(files[1]), load_run(files[2])], resamples=100)


def test_eval_cli_errors_are_one_line(tmp_path, capsys):
    root = write_dataset(tmp_path)
    (root / "dev" / "queries.jsonl").write_text('{"id": "q1", "text": "x"}\n{oops\n')
    assert main(["eval", "--dataset", str(root), "--split", "dev", "--no-cache"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{root}/dev/queries.jsonl:2: not valid JSON" in err
    assert main(["eval", "--dataset", str(root), "--split", "dev", "--dims", "1000", "--no-cache"]) == 1
    assert "--dims: profile 'e5-small': 1000 is out of range; allowed 128..384" in capsys.readouterr().err
    assert main(["eval", "--split", "dev"]) == 1
    assert "--dataset DIR is required" in capsys.readouterr().err
