"""`vien up`: run the local mesh as supervised child processes.

Each service is its own process (as in production), started with the addresses of the others in
its environment. The supervisor prints one `vien metrics name=host:port ...` line (each service's
Prometheus endpoint, /metrics) and then one `vien ready name=host:port ...` line once every child
reports healthy (both also go to DATA_DIR/mesh.json, the metrics under "metrics"), restarts a child
that dies (with back-off), and on SIGINT/SIGTERM stops them all: SIGTERM first, SIGKILL for whatever
has not exited after a grace period.

`--replicas SERVICE=N,...` runs N processes of a service, each on a port of its own; its callers get
every address, comma-separated (`VIEN_QUERY_EMBEDDER_ADDR=127.0.0.1:a,127.0.0.1:b`), and spread their
requests over them (round_robin, vien.runtime.balancing). The ready and metrics lines and mesh.json list
a replicated service the same way. Each replica is supervised (and restarted) on its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from vien.runtime import env as env_vars
from vien.runtime.backoff import backoff_delay
from vien.runtime.config import Settings
from vien_tools.cli.processes import Child, free_port, grpc_serving, http_ready, redis_ready
from vien_tools.cli.registry import SERVICES

MESH_FILE = "mesh.json"
DEFAULT_DATA_DIR = Path.home() / ".cache" / "vien" / "data"


def mesh_address(name: str, env: str | None, fallback: str) -> str:
    """Where a command should look for `name`: its environment variable, else the running `vien up`."""
    if env and env_vars.is_set(env):
        return str(env_vars.get(env))
    try:
        found = json.loads((DEFAULT_DATA_DIR / MESH_FILE).read_text()).get(name)
    except (OSError, ValueError):
        found = None
    return str(found) if found else fallback


def grouped(children: list[Child], attr: str) -> dict[str, str]:
    """service -> its children's `attr` (address or metrics), comma-separated, in start order."""
    out: dict[str, list[str]] = {}
    for c in children:
        value = getattr(c, attr)
        if value:
            out.setdefault(c.group, []).append(value)
    return {name: ",".join(values) for name, values in out.items()}


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
        c.hook_pending = c.on_ready is not None
        c.started = True

    def _run_hooks(self) -> None:
        for c in self.children:
            if c.hook_pending and c.proc is not None and c.ready(c.address):
                assert c.on_ready is not None
                c.on_ready(c)
                c.hook_pending = False

    def start(self, timeout: float = 60.0) -> bool:
        """Spawn stage by stage: infrastructure first (its hooks run), then the services."""
        for stage in sorted({c.stage for c in self.children}):
            group = [c for c in self.children if c.stage == stage]
            for c in group:
                self._spawn(c)
            if stage == max(c.stage for c in self.children):
                break
            deadline = time.monotonic() + timeout
            while not self.stopping and not all(c.ready(c.address) for c in group):
                if time.monotonic() > deadline:
                    self.say("timed out starting: " + ", ".join(c.name for c in group if not c.ready(c.address)))
                    return False
                self.reap()
                time.sleep(0.1)
            self._run_hooks()
        return not self.stopping

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        pending = list(self.children)
        while pending and not self.stopping:
            self.reap()
            self._run_hooks()
            pending = [c for c in pending if not c.ready(c.address)]
            if not pending:
                break
            if time.monotonic() > deadline:
                self.say("timed out waiting for: " + ", ".join(c.name for c in pending))
                return False
            time.sleep(0.2)
        if self.stopping:
            return False
        metrics = " ".join(f"{n}={a}" for n, a in grouped(self.children, "metrics").items())
        if metrics:
            print(f"vien metrics {metrics}", file=self.out, flush=True)
        line = " ".join(f"{n}={a}" for n, a in grouped(self.children, "address").items())
        print(f"vien ready {line}", file=self.out, flush=True)
        return True

    def reap(self) -> None:
        """Restart children that exited, with exponential back-off (capped at 30 s)."""
        now = time.monotonic()
        for c in self.children:
            if c.proc is None:
                if c.started and now >= c.restart_at and not self.stopping:
                    self._spawn(c)
                continue
            rc = c.proc.poll()
            if rc is None or self.stopping:
                continue
            delay = backoff_delay(c.restarts, 0.5, 30.0, jitter=0.0)
            c.restarts += 1
            self.say(f"{c.name} exited with status {rc}; restarting in {delay:.1f}s (restart #{c.restarts})")
            c.proc = None
            c.restart_at = now + delay

    def run_until_stopped(self) -> None:
        while not self.stopping:
            self.reap()
            self._run_hooks()
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


SERVICE_ORDER = ("query-embedder", "doc-embedder", "router", "store", "search", "ingest", "gateway")
# Children named otherwise in the ready line, and how their readiness is checked (default: gRPC health).
CHILD_NAME = {"gateway": "http"}
READY_CHECK: dict[str, Callable[[str], bool]] = {"gateway": http_ready}


# What `--replicas` may scale: stateless services, and ingest workers (one consumer group). Not the store
# (one process owns the Qdrant Edge shards) nor the gateway (its one port is what users call).
REPLICABLE = ("query-embedder", "doc-embedder", "router", "search", "ingest")


def parse_replicas(spec: str) -> dict[str, int]:
    """`query-embedder=2,ingest=2` -> {"query-embedder": 2, "ingest": 2}; ValueError naming the fault."""
    out: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, count = part.partition("=")
        if name not in REPLICABLE:
            raise ValueError(f"--replicas {part!r}: service must be one of {', '.join(REPLICABLE)}")
        if not sep or not count.strip().isdigit() or not 1 <= int(count) <= 16:
            raise ValueError(f"--replicas {part!r}: expected {name}=N with 1 <= N <= 16")
        out[name] = int(count)
    return out


def _create_topics(child: Child, document_partitions: int) -> None:
    import asyncio

    from vien.kafka.topics import default_topics, ensure_topics

    asyncio.run(ensure_topics(child.address, default_topics(document_partitions)))


def build_children(host: str, ports: dict[str, int], redis: bool, data_dir: Path,
                   python: str = sys.executable, metrics_ports: dict[str, int] | None = None,
                   extra: dict[str, list[tuple[int, int]]] | None = None, doc_backend: str = "onnx") -> list[Child]:
    """`extra`: service -> (port, metrics port) of each replica beyond the first (see replica_ports);
    `doc_backend` "vllm": e5's document side on a supervised vLLM."""
    from vien.kafka.topics import DEFAULT_DOCUMENT_PARTITIONS
    from vien_tools.cli.tansu import LocalBroker, find_tansu, kafka_metadata_ok

    extra = extra or {}
    addr = {name: f"{host}:{port}" for name, port in ports.items()}
    replicas = {n: [(ports[n], (metrics_ports or {}).get(n)), *extra.get(n, [])] for n in SERVICE_ORDER}
    env = {SERVICES[n].env: ",".join(f"{host}:{p}" for p, _ in replicas[n]) for n in SERVICES}
    env["VIEN_KAFKA_BOOTSTRAP"] = addr["kafka"]
    env["VIEN_KAFKA_LOCAL"] = "1"
    env["VIEN_STORE_BACKEND"] = f"edge:{data_dir / 'store'}"
    if redis:
        env["VIEN_REDIS_URL"] = f"redis://{addr['redis']}/0"
    children: list[Child] = []
    if doc_backend == "vllm":  # e5 on a supervised vLLM; the services read a profiles file pointing at it
        from vien_tools.cli.vllm_process import supervised_vllm

        settings = Settings.from_env()
        vllm, vllm_env = supervised_vllm(host, ports["vllm"], settings.models_dir, data_dir, settings.config_path)
        children.append(vllm)
        env.update(vllm_env)
    if redis:
        server = shutil.which("redis-server")
        if server is None:
            raise FileNotFoundError("redis-server not found on PATH (apt-get install redis-server), "
                                    "or run with --no-redis to serve uncached")
        children.append(Child("redis", [server, "--bind", host, "--port", str(ports["redis"]), "--save", "",
                                        "--appendonly", "no", "--maxmemory", "256mb",
                                        "--maxmemory-policy", "allkeys-lru"], addr["redis"], redis_ready, stage=0))
    broker = LocalBroker(binary=find_tansu())
    broker.host, broker.port = host, ports["kafka"]

    def kafka_ready(address: str) -> bool:
        h, p = address.rsplit(":", 1)
        return kafka_metadata_ok(h, int(p), timeout=0.5)

    # every ingest worker of the group gets partitions of its own (more workers than partitions would idle)
    partitions = max(DEFAULT_DOCUMENT_PARTITIONS, len(replicas["ingest"]))
    children.append(Child("kafka", broker.argv(), addr["kafka"], kafka_ready, env={"RUST_LOG": "warn"}, stage=0,
                          on_ready=lambda c: _create_topics(c, partitions)))
    for name in SERVICE_ORDER:
        service = CHILD_NAME.get(name, name)
        for i, (port, metrics_port) in enumerate(replicas[name]):
            argv = [python, "-m", "vien_tools", "serve", name, "--port", str(port), "--host", host]
            metrics = ""
            if metrics_port:
                argv += ["--metrics-port", str(metrics_port)]
                metrics = f"{host}:{metrics_port}"
            children.append(Child(service if i == 0 else f"{service}-{i + 1}", argv, f"{host}:{port}",
                                  READY_CHECK.get(name, grpc_serving), env=dict(env),
                                  stage=0 if name == "store" else 1, metrics=metrics, service=service))
    return children


PORT_ORDER = ["router", "query-embedder", "doc-embedder", "store", "search", "ingest", "gateway"]
METRICS_OFFSET = 10  # with a fixed base port, service i serves /metrics on base + 10 + i (50061.. by default)


def assign_ports(host: str, base_port: int, redis_port: int, kafka_port: int) -> dict[str, int]:
    ports = {n: free_port(host) if base_port == 0 else base_port + i for i, n in enumerate(PORT_ORDER)}
    ports["redis"] = redis_port or free_port(host)
    ports["kafka"] = kafka_port or free_port(host)
    return ports


def assign_metrics_ports(host: str, base_port: int) -> dict[str, int]:
    return {n: free_port(host) if base_port == 0 else base_port + METRICS_OFFSET + i for i, n in enumerate(PORT_ORDER)}


def replica_ports(host: str, replicas: dict[str, int]) -> dict[str, list[tuple[int, int]]]:
    """Free (port, metrics port) pairs for every replica beyond the first (which keeps the base ports)."""
    return {n: [(free_port(host), free_port(host)) for _ in range(count - 1)] for n, count in replicas.items()}


def up(host: str, base_port: int, redis_port: int, kafka_port: int, redis: bool, log_dir: Path | None,
       data_dir: Path, ready_timeout: float, replicas: dict[str, int] | None = None, doc_backend: str = "onnx",
       vllm_port: int = 0) -> int:
    ports = assign_ports(host, base_port, redis_port, kafka_port)
    if doc_backend == "vllm":
        ports["vllm"] = vllm_port or free_port(host)
    metrics_ports = assign_metrics_ports(host, base_port)
    extra = replica_ports(host, replicas or {})
    sup = Supervisor(build_children(host, ports, redis, data_dir, metrics_ports=metrics_ports, extra=extra,
                                    doc_backend=doc_backend), log_dir)

    def on_signal(signum: int, frame: object) -> None:
        sup.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if log_dir is not None:
            sup.say(f"service logs in {log_dir}")
        if not sup.start(ready_timeout) or not sup.wait_ready(ready_timeout):
            if not sup.stopping:
                return 1
        else:
            # Other `vien` commands (publish, search, stats) find the running mesh through this file.
            data_dir.mkdir(parents=True, exist_ok=True)
            mesh: dict[str, object] = dict(grouped(sup.children, "address"))
            mesh["metrics"] = grouped(sup.children, "metrics")
            (data_dir / MESH_FILE).write_text(json.dumps(mesh))
            sup.run_until_stopped()
        return 0
    finally:
        sup.stop()
        (data_dir / MESH_FILE).unlink(missing_ok=True)
        sup.say("stopped")
