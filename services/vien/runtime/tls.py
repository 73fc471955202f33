"""Optional TLS / mTLS between services, from Settings (VIEN_TLS_CERT, VIEN_TLS_KEY, VIEN_TLS_CA,
VIEN_TLS_CLIENT_AUTH=require, VIEN_TLS_SERVER_NAME).

Every process of the mesh gets the same three files (a Secret in Helm): its cert+key serve its own
port and, with client auth on, identify it to the services it calls; the CA verifies both directions.
No cert configured = plaintext, as before. A half-configured setup fails at start, naming the variable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from vien.runtime.balancing import balancing_options, channel_target
from vien.runtime.config import ConfigError, Settings


@dataclass(frozen=True)
class TlsFiles:
    cert: bytes | None
    key: bytes | None
    ca: bytes | None
    client_auth: bool
    server_name: str | None


def _read(path: Path | None, env: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"environment {env}={str(path)!r}: cannot read ({exc.strerror})") from None


def tls_files(settings: Settings) -> TlsFiles | None:
    """The PEM bytes to use, or None for plaintext. Raises ConfigError on an incomplete setup."""
    s = settings
    if s.tls_cert is None and s.tls_key is None and s.tls_ca is None:
        if s.tls_client_auth:
            raise ConfigError("environment VIEN_TLS_CLIENT_AUTH=require needs VIEN_TLS_CERT, VIEN_TLS_KEY "
                              "and VIEN_TLS_CA")
        return None
    if (s.tls_cert is None) != (s.tls_key is None):
        raise ConfigError("environment VIEN_TLS_CERT and VIEN_TLS_KEY: set both or neither")
    if s.tls_client_auth and (s.tls_ca is None or s.tls_cert is None):
        raise ConfigError("environment VIEN_TLS_CLIENT_AUTH=require needs VIEN_TLS_CERT, VIEN_TLS_KEY "
                          "and VIEN_TLS_CA")
    return TlsFiles(_read(s.tls_cert, "VIEN_TLS_CERT"), _read(s.tls_key, "VIEN_TLS_KEY"),
                    _read(s.tls_ca, "VIEN_TLS_CA"), s.tls_client_auth, s.tls_server_name)


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    t = tls_files(settings)
    if t is None:
        return None
    if t.cert is None or t.key is None:
        raise ConfigError("environment VIEN_TLS_CERT and VIEN_TLS_KEY are required to serve TLS "
                          "(VIEN_TLS_CA alone configures clients only)")
    return grpc.ssl_server_credentials([(t.key, t.cert)], root_certificates=t.ca if t.client_auth else None,
                                       require_client_auth=t.client_auth)


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """Client side: verify servers against the CA (system roots when none); present cert+key if given."""
    t = tls_files(settings)
    if t is None:
        return None
    return grpc.ssl_channel_credentials(root_certificates=t.ca, private_key=t.key, certificate_chain=t.cert)


def channel_tls_options(settings: Settings) -> list[tuple[str, Any]]:
    name = settings.tls_server_name
    if name and tls_files(settings) is not None:
        return [("grpc.ssl_target_name_override", name), ("grpc.default_authority", name)]
    return []


def aio_channel_for(address: str, settings: Settings, options: list[tuple[str, Any]],
                    interceptors: Any = None) -> grpc.aio.Channel:
    """An asyncio channel; `address` may list replicas or be dns:///... (vien.runtime.balancing)."""
    creds = channel_credentials(settings)
    target, options = channel_target(address), [*options, *balancing_options()]
    if creds is None:
        return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(target, creds, options=[*options, *channel_tls_options(settings)],
                                   interceptors=interceptors)


def channel_for(address: str, settings: Settings, options: list[tuple[str, Any]] | None = None) -> grpc.Channel:
    """A blocking channel (CLI, health probes, the remote store) that follows the TLS settings."""
    creds = channel_credentials(settings)
    target, options = channel_target(address), [*(options or []), *balancing_options()]
    if creds is None:
        return grpc.insecure_channel(target, options=options)
    return grpc.secure_channel(target, creds, options=[*options, *channel_tls_options(settings)])
