"""Blocking gRPC helpers for the CLI and benchmarks (tracing interceptor included)."""

from __future__ import annotations

import grpc
import numpy as np

from vien.runtime.telemetry import traced_channel
from vien.v1 import common_pb2, router_pb2_grpc

KINDS = {"query": common_pb2.EMBED_KIND_QUERY, "document": common_pb2.EMBED_KIND_DOCUMENT}


def router_stub(address: str) -> tuple[grpc.Channel, router_pb2_grpc.RouterStub]:
    channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
    return channel, router_pb2_grpc.RouterStub(traced_channel(channel))


def vector_of(e: common_pb2.Embedding) -> np.ndarray:
    return np.frombuffer(e.vector, dtype="<f4")
