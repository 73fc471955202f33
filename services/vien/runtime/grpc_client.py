"""Client channels between services: tracing interceptors, size limits, keepalive, deadlines, TLS, and
(through vien.runtime.tls) round_robin over every replica with retries of idempotent RPCs."""

from __future__ import annotations

import grpc

from vien.runtime.config import Settings
from vien.runtime.telemetry import client_interceptors
from vien.runtime.tls import aio_channel_for


def channel_options(settings: Settings) -> list[tuple[str, int | str]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
    ]


def aio_channel(address: str, settings: Settings) -> grpc.aio.Channel:
    """A channel to another service: TLS (mTLS) when the VIEN_TLS_* settings say so, plaintext otherwise."""
    return aio_channel_for(address, settings, channel_options(settings), client_interceptors())


def remaining_timeout(context: grpc.aio.ServicerContext, default: float, floor: float = 0.001) -> float:
    """The caller's deadline, passed on to the next hop (the default when the caller set none).

    A little less than what is left: the grpc-timeout header is rounded *up* on the wire (measured up to
    +0.5 %), and the answer still has to travel back, so the next hop must give up first.
    """
    remaining = context.time_remaining()
    if remaining is None:
        return default
    return max(floor, remaining * 0.99 - 0.002)
