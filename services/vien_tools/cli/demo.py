"""`vien demo` (what `make run` ends with): start the local mesh, embed Vietnamese and English
texts through it, show the detected languages and the cross-lingual similarities, then publish the
sample documents to Kafka, wait for ingestion, search them in both languages, and stop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vien.v1 import router_pb2
from vien_tools.cli.client import KINDS, router_stub, vector_of

QUERIES = [
    "giá vé máy bay từ Hà Nội đi Đà Nẵng",
    "gia ve may bay tu ha noi di da nang",
    "cheap flights from Hanoi to Da Nang",
    "cách nấu phở bò tại nhà",
]
DOCUMENTS = [
    "Vé máy bay chặng Hà Nội – Đà Nẵng hiện có giá từ 890.000 đồng một chiều.",
    "Round-trip airfare between Hanoi and Da Nang starts at about 40 US dollars.",
    "Phở bò cần xương ống ninh trong nhiều giờ, bánh phở, thịt bò tái và hành lá.",
    "Python is a programming language that emphasises readability.",
]


def start_mesh(log_dir: Path | None, timeout: float = 180.0) -> tuple[subprocess.Popen[str], dict[str, str]]:
    import tempfile

    data_dir = tempfile.mkdtemp(prefix="vien-demo-")
    argv = [sys.executable, "-m", "vien_tools", "up", "--base-port", "0", "--data-dir", data_dir,
            "--log-dir", str(log_dir) if log_dir else "-"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if "vien ready" in line:
            pairs = line.split("vien ready", 1)[1].split()
            return proc, dict(p.split("=", 1) for p in pairs)
        if time.monotonic() > deadline:
            break
    proc.terminate()
    raise RuntimeError(f"the mesh did not become ready (exit status {proc.wait()})")


def run(log_dir: Path | None) -> int:
    proc, addrs = start_mesh(log_dir)
    try:
        print(f"mesh ready: {' '.join(f'{k}={v}' for k, v in addrs.items())}")
        channel, stub = router_stub(addrs["router"])
        q = stub.Embed(router_pb2.EmbedRequest(texts=QUERIES, kind=KINDS["query"]), timeout=60)
        d = stub.Embed(router_pb2.EmbedRequest(texts=DOCUMENTS, kind=KINDS["document"]), timeout=60)
        q2 = stub.Embed(router_pb2.EmbedRequest(texts=QUERIES, kind=KINDS["query"]), timeout=60)
        channel.close()
        print("\nqueries (language -> profile, tokens):")
        for t, e in zip(QUERIES, q.embeddings, strict=True):
            print(f"  [{e.lang:5}] {e.profile} {e.token_count:3d} tok  {t}")
        print("\ndocuments:")
        for i, (t, e) in enumerate(zip(DOCUMENTS, d.embeddings, strict=True)):
            print(f"  D{i} [{e.lang:5}] {t}")
        qv = np.stack([vector_of(e) for e in q.embeddings])
        dv = np.stack([vector_of(e) for e in d.embeddings])
        sims = qv @ dv.T
        print("\ncosine similarity (query x document):")
        print("        " + "".join(f"   D{i}  " for i in range(len(DOCUMENTS))))
        for i, row in enumerate(sims):
            best = int(row.argmax())
            print(f"  Q{i}  " + "".join(f"{'*' if j == best else ' '}{s:6.3f} " for j, s in enumerate(row))
                  + f"  {QUERIES[i][:40]}")
        hits = sum(e.cache_hit for e in q2.embeddings)
        print(f"\nrepeat of the {len(QUERIES)} queries: {hits} served from the Redis cache, "
              f"router total {q2.timings.total_ms:.1f} ms (first time {q.timings.total_ms:.1f} ms)")
        search_demo(addrs)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


def search_demo(addrs: dict[str, str]) -> None:
    import asyncio
    from importlib import resources

    from vien_tools.cli.documents import publish, search, stats

    samples = Path(str(resources.files("vien.samples") / "documents.jsonl"))
    queries = (resources.files("vien.samples") / "queries.txt").read_text(encoding="utf-8").split("\n")
    summary = asyncio.run(publish(samples, addrs["kafka"], "vien.documents", skip_invalid=False))
    print(f"\npublished {summary['published']} document events to Kafka ({samples.name})")
    store_spec = f"remote:{addrs['store']}"
    deadline = time.monotonic() + 120
    while True:
        st = stats(store_spec, addrs["kafka"], "vien.documents", "vien.documents.dlq", "vien-ingest")
        if (st["lag"] == 0 and st["points"] >= 10) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    print(f"ingested: {json.dumps(st)}")
    for query in filter(None, (q.strip() for q in queries)):
        res = search(addrs["search"], query, "demo", 3, "", 30)
        print(f"\nsearch (tenant demo) [{res['query_lang']}] {query!r}  {res['took_ms']:.1f} ms")
        for h in res["hits"]:
            print(f"  {h['score']:.3f}  {h['doc_id']:<14} {h['title']}")
