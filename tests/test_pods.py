"""The rendered chart's pods, run as local processes by deploy/pods.py (the kubelet's part, emulated):
deploy/values-local.yaml rendered, every Deployment/StatefulSet started with its rendered env, mounts, ports
and probes, on real parts (tansu, redis-server, vLLM's CPU build serving a small Qwen3, the store service
with Qdrant Edge); the Hugging Face hub is a local stand-in (deploy/hubstub.py, fake: no hub here).

One run of the harness serves every test of this module (vLLM starts twice: at install and after the
outage). Part of `make helm-check`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = Path(os.environ.get("VIEN_VLLM_PYTHON") or ROOT / ".venv-vllm" / "bin" / "python")

pytestmark = pytest.mark.skipif(not VLLM_PYTHON.exists(), reason=f"vLLM's CPU build not at {VLLM_PYTHON}")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("pods")
    report = out / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "services"), "TMPDIR": str(out)}
    env.pop("VIEN_MODELS_DIR", None)   # nothing of this shell reaches the pods anyway; be explicit
    proc = subprocess.run([sys.executable, str(ROOT / "deploy" / "pods.py"), "--documents", "--outage",
                           "--ready-timeout", "900", "--report", str(report)],
                          capture_output=True, text=True, timeout=3000, env=env)
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else "{}"
    summary = json.loads(last)
    detail = json.loads(report.read_text()) if report.exists() else {}
    print(proc.stderr[-4000:])
    return {"rc": proc.returncode, "summary": summary, "report": detail, "stderr": proc.stderr}


def _pod(run: dict[str, Any], component: str) -> dict[str, Any]:
    return next(p for p in run["report"]["detail"].values() if p["component"] == component)


def _status(run: dict[str, Any], component: str) -> dict[str, Any]:
    name = next(n for n, p in run["report"]["detail"].items() if p["component"] == component)
    return next(p for p in run["summary"]["pods"] if p["name"] == name)


def test_every_rendered_pod_starts_and_becomes_ready(run):
    s = run["summary"]
    assert "error" not in s["checks"], s["checks"]["error"] + run["stderr"][-3000:]
    assert run["rc"] == 0
    names = {p["name"] for p in s["pods"]}
    for component in ("router", "query-embedder", "doc-embedder", "search", "ingest", "gateway", "store",
                      "vllm", "kafka", "redis"):
        assert any(name.startswith(f"vien-{component}-") for name in names), component
    # the last JSON line: every pod ready at the end (after the vLLM outage too)
    assert s["pods_total"] == len(s["pods"]) == s["pods_ready"]
    assert all(p["ready"] and p["phase"] == "Running" for p in s["pods"])


def test_ingest_has_the_models_it_loads(run):
    """Before the fix ingest did not mount the models volume: its tokenizer path did not exist and the
    pod crash-looped (never ready)."""
    ingest = _pod(run, "ingest")
    env = ingest["containers"]["ingest"]["env"]
    assert env["VIEN_MODELS_DIR"].startswith("/") and "/volumes/models" in env["VIEN_MODELS_DIR"]
    assert any(e[1] == "init fetch-0: completed" for e in ingest["events"])
    assert _status(run, "ingest")["restarts"] == 0


def test_fetched_model_and_threads_as_rendered(run):
    qe = _pod(run, "query-embedder")["containers"]
    dest = qe["fetch-0"]["env"]["DEST"]
    assert dest.endswith("/tiny-qwen3-onnx/" + qe["fetch-0"]["env"]["REVISION"])   # revision-keyed
    assert qe["fetch-0"]["env"]["HF_ENDPOINT"].startswith("http://127.0.0.1:")     # the hub stand-in
    # VIEN_ORT_THREADS from requests.cpu "1" through the downward API (resourceFieldRef, divisor 1)
    assert qe["query-embedder"]["env"]["VIEN_ORT_THREADS"] == "1"


def test_documents_published_to_the_rendered_topic_are_searchable(run):
    docs = run["summary"]["checks"]["documents"]
    assert docs["published"] == 12
    assert "vi-pho" in docs["hits"] and docs["profile"] == "tiny-qwen3"


def test_a_vllm_outage_makes_doc_embedders_not_ready_without_restarting_them(run):
    """Before the fix liveness was the readiness check: the breaker's NOT_SERVING for longer than
    failureThreshold x periodSeconds (60 s) restarted the doc-embedder while vLLM restarted."""
    o = run["summary"]["checks"]["vllm_outage"]
    assert o["doc_embedder_restarts"] == 0
    assert o["vllm_restarts"] >= 1
    events = [e[1] for e in _pod(run, "doc-embedder")["events"]]
    assert "doc-embedder: not ready" in events
    assert events[-1] == "doc-embedder: ready"
    assert _status(run, "doc-embedder")["restarts"] == 0
