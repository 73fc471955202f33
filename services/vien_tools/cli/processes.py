"""Child processes of `vien up` and the probes that tell when one is ready (gRPC health, HTTP, Redis PING); shared
by the supervisor, the vLLM launcher, the pod harness and the tests."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vien.runtime.config import Settings
from vien.runtime.tls import channel_for


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def grpc_serving(address: str, timeout: float = 0.5) -> bool:
    try:
        with channel_for(address, Settings.from_env()) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def http_ready(address: str, timeout: float = 0.5) -> bool:
    """GET /healthz answers 200 (the HTTP gateway: its router is SERVING)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{address}/healthz", timeout=timeout) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
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
    name: str                                       # unique: names its log file (query-embedder-2.log)
    argv: list[str]
    address: str
    ready: Callable[[str], bool]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    restart_at: float = 0.0
    log: IO[bytes] | None = None
    stage: int = 1                                  # started after every child of a lower stage is ready
    metrics: str = ""                               # host:port of its Prometheus /metrics ("" = none)
    on_ready: Callable[[Child], None] | None = None  # run once each time this child becomes ready
    hook_pending: bool = False
    started: bool = False
    service: str = ""                               # name in the ready line (replicas share it); "" = name

    @property
    def group(self) -> str:
        return self.service or self.name
