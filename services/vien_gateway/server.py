"""`vien serve gateway`: the OpenAI-compatible HTTP gateway in the foreground (uvicorn)."""

from __future__ import annotations

import logging
import os
import signal

from vien.runtime.auth import ApiKeys
from vien.runtime.balancing import port_of
from vien.runtime.config import Settings
from vien.runtime.logs import setup_logging
from vien.runtime.metrics import serve_metrics
from vien.runtime.telemetry import setup_tracing, shutdown_tracing
from vien_gateway.app import GatewayApp

log = logging.getLogger("vien.gateway")


def serve(port: int | None = None, host: str | None = None, metrics_port: int | None = None) -> int:
    import uvicorn

    settings = Settings.from_env()
    setup_logging("gateway", settings.log_level)
    setup_tracing("gateway")
    config = settings.config  # fail fast on a bad profiles file, before binding a port
    keys = ApiKeys.load(config, os.environ)
    host = host or settings.host
    port = port if port is not None else port_of(settings.http_addr)
    if not keys:
        log.warning("no API keys configured (auth.api_keys, VIEN_API_KEYS): http://%s:%d/v1/embeddings is "
                    "open to anyone who can reach it", host, port)
    serve_metrics(metrics_port, host)
    server = uvicorn.Server(uvicorn.Config(
        GatewayApp(settings, keys), host=host, port=port,
        loop="auto", http="auto",             # uvloop + httptools when installed (they are dependencies)
        lifespan="on", log_config=None, access_log=False, server_header=False,
        timeout_graceful_shutdown=5,
    ))
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal under the handler it found:
    # a no-op one makes that a clean exit (status 0), as for the gRPC services.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    try:
        server.run()
    finally:
        shutdown_tracing()
    return 0 if server.started else 1
