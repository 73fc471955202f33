"""`vien bench batch`: one OpenAI-sized request (2,048 inputs of 512 tokens each by default) through the HTTP
gateway of a fresh `vien up`, and the memory it costs every service on the path.

Memory: each service's peak resident set (VmHWM in /proc/PID/status, Linux) after start-up and a warm-up
request, and again after the big request; the difference is what the request cost at its peak. The gateway
splits the request into router calls of limits.max_texts_per_request (256) texts, at most two in flight,
so the router and the embedders never hold more than two such batches; the gateway itself holds the
request body, the vectors and the JSON answer. Inputs are distinct (no cache hits) and longer than the
profile's 512-token limit, sent with `vien_truncate: true`, so each is exactly 512 tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from vien.runtime.config import Settings
from vien_tools.build.setup import ensure_builtin_models

SYLLABLES = ("giá vé máy bay đi Đà Nẵng tháng này bao nhiêu phở bò Hà Nội cà phê sữa đá Sài Gòn thành phố "
             "the quick brown fox jumps over lazy dog museum opens morning closes evening river bridge").split()


def texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{i} " + " ".join(rng.choice(SYLLABLES) for _ in range(700)) for i in range(n)]


def _children(pid: int) -> dict[str, int]:
    """service name -> pid of `vien up`'s children (`python -m vien_tools serve <service>`)."""
    out: dict[str, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            status = (d / "status").read_text()
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))
        if ppid == pid and b"serve" in cmd:
            out[cmd[cmd.index(b"serve") + 1].decode()] = int(d.name)
    return out


def _peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(ns: argparse.Namespace | None = None) -> dict:
    from conftest import start_mesh, stop_mesh  # the same `vien up` the tests use
    from openai import OpenAI

    n = int(getattr(ns, "inputs", 2048))
    model = "text-embedding-3-small-document"  # bulk indexing: the doc-embedder, token-budget batching
    ensure_builtin_models(Settings.from_env())
    mesh = start_mesh(Path(tempfile.mkdtemp(prefix="vien-bench-batch-")),
                      env={"VIEN_HTTP_TIMEOUT_S": os.environ.get("VIEN_HTTP_TIMEOUT_S", "600")})
    try:
        pids = _children(mesh.proc.pid)
        client = OpenAI(base_url=f"http://{mesh.addrs['http']}/v1", api_key="unused", max_retries=0, timeout=3600)
        client.embeddings.create(model=model, input=texts(8, seed=1), extra_body={"vien_truncate": True})
        before = {s: _peak_mib(p) for s, p in pids.items()}
        body = texts(n)
        t0 = time.perf_counter()
        r = client.embeddings.create(model=model, input=body, extra_body={"vien_truncate": True})
        wall = time.perf_counter() - t0
        after = {s: _peak_mib(p) for s, p in pids.items()}
        assert len(r.data) == n and [d.index for d in r.data] == list(range(n))
        request_mib = len(json.dumps({"model": model, "input": body}, ensure_ascii=False).encode()) / 2**20
    finally:
        stop_mesh(mesh)
    return {"bench": "batch", "inputs": n, "prompt_tokens": r.usage.prompt_tokens,
            "tokens_per_input": r.usage.prompt_tokens / n, "request_body_mib": round(request_mib, 1),
            "wall_s": round(wall, 1), "inputs_per_s": round(n / wall, 1),
            "peak_rss_mib_before": {k: round(v) for k, v in sorted(before.items())},
            "peak_rss_mib_after": {k: round(v) for k, v in sorted(after.items())},
            "peak_rss_growth_mib": {k: round(after[k] - before[k]) for k in sorted(after)}}


if __name__ == "__main__":
    print(json.dumps(run(argparse.Namespace(inputs=int(sys.argv[1]) if len(sys.argv) > 1 else 2048))))
