"""`vien up`: run the local mesh as supervised child processes.

Each service is its own process (as in production), started with the addresses of the others in
its environment. The supervisor prints one `vien ready name=host:port ...` line once every child
reports healthy, restarts a child that dies (with back-off), and on SIGINT/SIGTERM stops them all:
SIGTERM first, SIGKILL for whatever has not exited after a grace period.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vien.runtime.registry import SERVICES


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def grpc_serving(address: str, timeout: float = 0.5) -> bool:
    try:
        with grpc.insecure_channel(address) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def redis_ready(address: str, timeout: float = 0.5) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class Child:
    name: str
    argv: list[str]
    address: str
    ready: Callable[[str], bool]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    restart_at: float = 0.0
    log: IO[bytes] | None = None


class Supervisor:
    def __init__(self, children: list[Child], log_dir: Path | None, out: IO[str] = sys.stdout,
                 err: IO[str] = sys.stderr, grace_s: float = 10.0) -> None:
        self.children = children
        self.log_dir = log_dir
        self.out = out
        self.err = err
        self.grace_s = grace_s
        self.stopping = False

    def say(self, msg: str) -> None:
        print(f"vien: {msg}", file=self.err, flush=True)

    def _spawn(self, c: Child) -> None:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            if c.log is None:
                c.log = open(self.log_dir / f"{c.name}.log", "ab")  # noqa: SIM115 - kept open for the child
        env = {**os.environ, **c.env}
        c.proc = subprocess.Popen(c.argv, env=env, stdin=subprocess.DEVNULL, stdout=c.log, stderr=c.log,
                                  start_new_session=True)

    def start(self) -> None:
        for c in self.children:
            self._spawn(c)

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        pending = list(self.children)
        while pending and not self.stopping:
            self.reap()
            pending = [c for c in pending if not c.ready(c.address)]
            if not pending:
                break
            if time.monotonic() > deadline:
                self.say("timed out waiting for: " + ", ".join(c.name for c in pending))
                return False
            time.sleep(0.2)
        if self.stopping:
            return False
        line = " ".join(f"{c.name}={c.address}" for c in self.children)
        print(f"vien ready {line}", file=self.out, flush=True)
        return True

    def reap(self) -> None:
        """Restart children that exited, with exponential back-off (capped at 30 s)."""
        now = time.monotonic()
        for c in self.children:
            if c.proc is None:
                if now >= c.restart_at and not self.stopping:
                    self._spawn(c)
                continue
            rc = c.proc.poll()
            if rc is None or self.stopping:
                continue
            delay = min(30.0, 0.5 * 2 ** min(c.restarts, 6))
            c.restarts += 1
            self.say(f"{c.name} exited with status {rc}; restarting in {delay:.1f}s (restart #{c.restarts})")
            c.proc = None
            c.restart_at = now + delay

    def run_until_stopped(self) -> None:
        while not self.stopping:
            self.reap()
            time.sleep(0.2)

    def stop(self) -> None:
        self.stopping = True
        live = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for c in reversed(live):
            assert c.proc is not None
            c.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for c in live:
            assert c.proc is not None
            try:
                c.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{c.name} did not stop in {self.grace_s:.0f}s; killing it")
                c.proc.kill()
                c.proc.wait()
        for c in self.children:
            if c.log is not None:
                c.log.close()
                c.log = None


def build_children(host: str, ports: dict[str, int], redis: bool, python: str = sys.executable) -> list[Child]:
    addr = {name: f"{host}:{port}" for name, port in ports.items()}
    env = {SERVICES[n].env: addr[n] for n in SERVICES}
    if redis:
        env["VIEN_REDIS_URL"] = f"redis://{addr['redis']}/0"
    children: list[Child] = []
    if redis:
        server = shutil.which("redis-server")
        if server is None:
            raise FileNotFoundError("redis-server not found on PATH (apt-get install redis-server), "
                                    "or run with --no-redis to serve uncached")
        children.append(Child("redis", [server, "--bind", host, "--port", str(ports["redis"]), "--save", "",
                                        "--appendonly", "no", "--maxmemory", "256mb",
                                        "--maxmemory-policy", "allkeys-lru"], addr["redis"], redis_ready))
    for name in ("query-embedder", "doc-embedder", "router"):
        children.append(Child(name, [python, "-m", "vien", "serve", name, "--port", str(ports[name]),
                                     "--host", host], addr[name], grpc_serving, env=dict(env)))
    return children


def assign_ports(host: str, base_port: int, redis_port: int) -> dict[str, int]:
    names = ["router", "query-embedder", "doc-embedder"]
    ports = {n: free_port(host) if base_port == 0 else base_port + i for i, n in enumerate(names)}
    ports["redis"] = redis_port or free_port(host)
    return ports


def up(host: str, base_port: int, redis_port: int, redis: bool, log_dir: Path | None,
       ready_timeout: float) -> int:
    ports = assign_ports(host, base_port, redis_port)
    sup = Supervisor(build_children(host, ports, redis), log_dir)

    def on_signal(signum: int, frame: object) -> None:
        sup.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        sup.start()
        if log_dir is not None:
            sup.say(f"service logs in {log_dir}")
        if not sup.wait_ready(ready_timeout):
            if not sup.stopping:
                return 1
        else:
            sup.run_until_stopped()
        return 0
    finally:
        sup.stop()
        sup.say("stopped")
