"""Blocking gRPC helpers for the CLI and benchmarks (tracing interceptor included)."""

from __future__ import annotations

import os

import grpc
import numpy as np

from vien.embedding.requests import KIND_TO_PB
from vien.runtime.auth import with_client_key
from vien.runtime.config import Settings
from vien.runtime.telemetry import traced_channel
from vien.runtime.tls import channel_for
from vien.v1 import common_pb2, router_pb2_grpc

KINDS = KIND_TO_PB  # `vien embed --kind query|document`


def client_channel(address: str) -> tuple[grpc.Channel, grpc.Channel]:
    """(closable channel, the one to make stubs on): TLS per VIEN_TLS_*, bearer key from VIEN_API_KEY."""
    channel = channel_for(address, Settings.from_env(), [("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    return channel, with_client_key(traced_channel(channel), os.environ)


def router_stub(address: str) -> tuple[grpc.Channel, router_pb2_grpc.RouterStub]:
    channel, calls = client_channel(address)
    return channel, router_pb2_grpc.RouterStub(calls)


def vector_of(e: common_pb2.Embedding) -> np.ndarray:
    return np.frombuffer(e.vector, dtype="<f4")
