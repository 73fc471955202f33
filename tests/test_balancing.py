"""Request-level balancing of the shared channel factory (vien.runtime.balancing), on real gRPC servers
over loopback: round_robin over a static list of replicas, fail-over to the live ones with retries of
idempotent RPCs, a single address as before; and the `--replicas` syntax of `vien up`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from vien.runtime.balancing import IDEMPOTENT_RPCS, channel_target, service_config
from vien.runtime.config import ConfigError, Settings
from vien.runtime.grpc_client import aio_channel
from vien.runtime.grpc_server import server_options
from vien.v1 import embedder_pb2, embedder_pb2_grpc
from vien_tools.cli.supervisor import Child, grouped, parse_replicas


def test_targets_for_one_address_a_replica_list_and_dns():
    assert channel_target("127.0.0.1:50052") == "127.0.0.1:50052"
    assert channel_target("vien-query-embedder:50052") == "vien-query-embedder:50052"
    assert channel_target("dns:///vien-query-embedder:50052") == "dns:///vien-query-embedder:50052"
    assert channel_target("127.0.0.1:1, 127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target("[::1]:1,[::1]:2") == "ipv6:[::1]:1,[::1]:2"
    with pytest.raises(ConfigError, match="dns:///name:port"):
        channel_target("a:1,b:2")
    with pytest.raises(ConfigError, match="mixes IPv4 and IPv6"):
        channel_target("127.0.0.1:1,[::1]:2")


def test_service_config_balances_round_robin_and_retries_only_idempotent_rpcs():
    cfg = json.loads(service_config())
    assert cfg["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = cfg["methodConfig"]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    names = {(n["service"], n.get("method", "")) for n in method["name"]}
    assert names == set(IDEMPOTENT_RPCS)
    assert ("vien.v1.VectorStore", "Upsert") not in names and ("vien.v1.Router", "EmbedStream") not in names


def test_replicas_option_syntax_and_grouped_ready_line():
    assert parse_replicas("query-embedder=2, ingest=3,") == {"query-embedder": 2, "ingest": 3}
    for bad, msg in (("store=2", "must be one of"), ("router", "expected router=N"), ("search=0", "1 <= N"),
                     ("gateway=2", "must be one of")):
        with pytest.raises(ValueError, match=msg):
            parse_replicas(bad)
    kids = [Child("router", [], "h:1", bool, metrics="h:11"),
            Child("query-embedder", [], "h:2", bool, metrics="h:12", service="query-embedder"),
            Child("query-embedder-2", [], "h:3", bool, metrics="h:13", service="query-embedder")]
    assert grouped(kids, "address") == {"router": "h:1", "query-embedder": "h:2,h:3"}
    assert grouped(kids, "metrics") == {"router": "h:11", "query-embedder": "h:12,h:13"}


class CountingEmbedder(embedder_pb2_grpc.QueryEmbedderServicer):
    def __init__(self) -> None:
        self.calls = 0
        self.health: health.aio.HealthServicer | None = None

    async def Encode(self, request: embedder_pb2.EncodeRequest, context: grpc.aio.ServicerContext
                     ) -> embedder_pb2.EncodeResponse:
        self.calls += 1
        return embedder_pb2.EncodeResponse(model_id="counting")


async def _server(impl: CountingEmbedder, serving: bool = True) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    embedder_pb2_grpc.add_QueryEmbedderServicer_to_server(impl, server)
    impl.health = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(impl.health, server)
    await impl.health.set("", health_pb2.HealthCheckResponse.SERVING if serving
                          else health_pb2.HealthCheckResponse.NOT_SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


def test_a_replica_list_spreads_requests_and_fails_over_without_errors():
    async def scenario() -> None:
        impls = [CountingEmbedder() for _ in range(3)]
        started = [await _server(i) for i in impls]
        address = ",".join(f"127.0.0.1:{port}" for _, port in started)
        settings = Settings()
        try:
            async with aio_channel(address, settings) as ch:
                stub = embedder_pb2_grpc.QueryEmbedderStub(ch)
                for _ in range(60):
                    await stub.Encode(embedder_pb2.EncodeRequest(texts=["x"]), timeout=5)
                # round_robin, not pick_first (which sends all 60 to one); ±1 while the channels connect
                assert min(i.calls for i in impls) >= 18, [i.calls for i in impls]
                first = impls[0].calls
                await started[0][0].stop(None)                     # one replica goes away
                for _ in range(40):                                # no request fails
                    await stub.Encode(embedder_pb2.EncodeRequest(texts=["x"]), timeout=5)
                assert impls[0].calls == first and impls[1].calls + impls[2].calls == 100 - first
                assert abs(impls[1].calls - impls[2].calls) <= 3, [i.calls for i in impls]
            async with aio_channel(f"127.0.0.1:{started[1][1]}", settings) as ch:  # one plain address
                await embedder_pb2_grpc.QueryEmbedderStub(ch).Encode(embedder_pb2.EncodeRequest(texts=["x"]),
                                                                     timeout=5)
            assert impls[1].calls + impls[2].calls == 101 - first
        finally:
            for server, _ in started:
                await server.stop(None)

    asyncio.run(scenario())


def test_only_replicas_that_report_serving_get_requests():
    """Client-side health checking: a replica that is up but NOT_SERVING (loading its model after a
    restart, draining, a failed space guard) gets nothing until it reports SERVING."""
    async def scenario() -> None:
        impls = [CountingEmbedder(), CountingEmbedder()]
        started = [await _server(impls[0]), await _server(impls[1], serving=False)]
        try:
            async with aio_channel(",".join(f"127.0.0.1:{p}" for _, p in started), Settings()) as ch:
                stub = embedder_pb2_grpc.QueryEmbedderStub(ch)
                for _ in range(20):
                    await stub.Encode(embedder_pb2.EncodeRequest(texts=["x"]), timeout=5)
                assert [i.calls for i in impls] == [20, 0]
                assert impls[1].health is not None
                await impls[1].health.set("", health_pb2.HealthCheckResponse.SERVING)
                await asyncio.sleep(0.2)
                for _ in range(20):
                    await stub.Encode(embedder_pb2.EncodeRequest(texts=["x"]), timeout=5)
                assert impls[1].calls >= 8, [i.calls for i in impls]
        finally:
            for server, _ in started:
                await server.stop(None)

    asyncio.run(scenario())


def test_up_refuses_a_bad_replicas_option_in_one_line():
    out = subprocess.run([sys.executable, "-m", "vien_tools", "up", "--replicas", "store=2"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "vien: error: --replicas 'store=2': service must be one of query-embedder, doc-embedder, router, "
        "search, ingest"]


def test_servers_age_out_connections_only_when_configured(monkeypatch):
    """VIEN_MAX_CONNECTION_AGE_S makes servers close connections (GOAWAY) so that callers re-resolve their
    dns:/// targets and reach replicas added since; off by default (one machine has no DNS to follow)."""
    assert not any(k.startswith("grpc.max_connection_age") for k, _ in server_options(Settings()))
    monkeypatch.setenv("VIEN_MAX_CONNECTION_AGE_S", "60")
    monkeypatch.setenv("VIEN_MAX_CONNECTION_AGE_GRACE_S", "30")
    opts = dict(server_options(Settings.from_env()))
    assert opts["grpc.max_connection_age_ms"] == 60_000 and opts["grpc.max_connection_age_grace_ms"] == 30_000
    monkeypatch.setenv("VIEN_MAX_CONNECTION_AGE_S", "soon")
    with pytest.raises(ConfigError, match="VIEN_MAX_CONNECTION_AGE_S"):
        Settings.from_env()
