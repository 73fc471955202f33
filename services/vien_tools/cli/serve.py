"""`vien serve SERVICE`: run one service in the foreground."""

from __future__ import annotations

import asyncio

from vien.runtime.balancing import port_of
from vien.runtime.config import Settings
from vien.runtime.grpc_server import run_app
from vien.runtime.logs import setup_logging
from vien.runtime.metrics import serve_metrics
from vien.runtime.telemetry import setup_tracing, shutdown_tracing
from vien_tools.cli.registry import SERVICES


def serve(name: str, port: int | None = None, host: str | None = None, metrics_port: int | None = None) -> int:
    spec = SERVICES[name]
    settings = Settings.from_env()
    setup_logging(name, settings.log_level)
    setup_tracing(name)
    _ = settings.config  # fail fast on a bad profiles file, before binding a port
    serve_metrics(metrics_port, host or settings.host)
    app = spec.create(settings)
    try:
        asyncio.run(run_app(app, settings, port if port is not None else port_of(spec.address(settings)), host))
    finally:
        shutdown_tracing()
    return 0
