"""`vien up` supervises real processes; `vien embed` prints JSON and fails with one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import child_processes, start_mesh, stop_mesh

from vien_tools.cli.supervisor import free_port, grpc_serving

ALL_SERVICES = ("router", "query-embedder", "doc-embedder", "store", "search", "ingest")


def _children(pid: int) -> dict[str, int]:
    """service name -> pid of the direct children of `vien up`."""
    found = {}
    for cpid, argv in child_processes(pid):
        args = " ".join(argv) + " "
        for name in ALL_SERVICES:
            if f"serve {name} " in args:
                found[name] = int(cpid)
        if "serve gateway " in args:
            found["http"] = int(cpid)  # the OpenAI-compatible HTTP gateway is `http=` in the ready line
        if "redis-server" in args:
            found["redis"] = int(cpid)
        if "tansu" in args:
            found["kafka"] = int(cpid)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_up_restarts_a_crashed_service_and_stops_everything_on_sigterm(models_dir, tmp_path):
    mesh = start_mesh(tmp_path)
    try:
        assert set(mesh.addrs) == {"redis", "kafka", "http", *ALL_SERVICES}
        kids = _children(mesh.proc.pid)
        assert set(kids) == {"redis", "kafka", "http", *ALL_SERVICES}, kids
        os.kill(kids["query-embedder"], signal.SIGKILL)
        deadline = time.monotonic() + 120
        restarted = False
        while time.monotonic() < deadline:
            now = _children(mesh.proc.pid).get("query-embedder")
            if now and now != kids["query-embedder"] and grpc_serving(mesh.addrs["query-embedder"]):
                restarted = True
                break
            time.sleep(0.5)
        assert restarted, "query-embedder was not restarted"
        kids = _children(mesh.proc.pid)
    finally:
        rc = stop_mesh(mesh)
    assert rc == 0
    assert not [n for n, p in kids.items() if _alive(p)], "children left running after SIGTERM"
    assert "restarting" in mesh.proc.stderr.read()


def test_embed_cli_prints_one_json_object_per_text(mesh):
    out = subprocess.run(
        [sys.executable, "-m", "vien_tools", "embed", "--router", mesh.router, "--dims", "256",
         "xin chào thế giới", "hello world"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["lang"] for r in rows] == ["vi", "en"]
    for r in rows:
        assert r["profile"] == "e5-small" and r["dims"] == 256 and len(r["embedding"]) == 256
        assert {"text", "lang", "profile", "dims", "embedding"} <= set(r)


def test_embed_cli_errors_are_one_line_without_traceback(mesh):
    bad = subprocess.run([sys.executable, "-m", "vien_tools", "embed", "--router", mesh.router, "--dims", "7", "x"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr
    assert "INVALID_ARGUMENT" in bad.stderr and "dimensions" in bad.stderr

    down = subprocess.run([sys.executable, "-m", "vien_tools", "embed", "--router", f"127.0.0.1:{free_port()}",
                           "--timeout", "3", "x"], capture_output=True, text=True, timeout=60)
    assert down.returncode != 0 and "Traceback" not in down.stderr
    assert "cannot reach the router" in down.stderr
