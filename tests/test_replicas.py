"""Replicas on one machine, on real parts: `vien up --replicas query-embedder=2,ingest=2`.

- Two query-embedders behind the router each serve a fair share of a steady query load (read from their
  Prometheus metrics); one killed with SIGKILL under load: no request fails (the RPCs in flight on it are
  retried on the survivor), the survivor takes the load, `vien up` restarts it and it gets traffic again.
- Two ingest workers in one consumer group split the topic's partitions; one killed with SIGKILL
  mid-stream (these two are the test's own processes, so no supervisor brings it back): the other takes
  over its partitions, and every document ends exactly once at its newest version.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import grpc
import pytest
from conftest import Mesh, child_processes, serve_process, start_mesh, stop_mesh
from test_documents_e2e import mixed_stream, vien, wait_for, wrong_documents
from test_faults import committed_total
from test_observability import scrape, value

from vien.kafka.topics import DEFAULT_DOCUMENT_PARTITIONS, ensure_topics
from vien.runtime.config import Settings
from vien.runtime.grpc_client import aio_channel
from vien.store.base import SearchFilter
from vien.store.remote import RemoteStore
from vien.v1 import common_pb2, router_pb2, router_pb2_grpc
from vien_tools.cli.supervisor import free_port, grpc_serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def replicated(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    m = start_mesh(tmp_path_factory.mktemp("replicas"), extra=["--replicas", "query-embedder=2,ingest=2",
                                                                "--no-redis"])
    yield m
    stop_mesh(m)


def _pid_on_port(mesh: Mesh, address: str) -> int | None:
    """The mesh's child process serving `address` (by its --port argument), or None while there is none."""
    port = address.rsplit(":", 1)[1]
    return next((pid for pid, argv in child_processes(mesh.proc.pid)
                 if ("--port", port) in pairwise(argv)), None)


def _encodes(metrics: str) -> float:
    try:
        return value(scrape(metrics), "vien_rpc_latency_seconds_count", method="Encode") or 0.0
    except OSError:  # the replica is down
        return -1.0


def test_ready_line_and_mesh_file_list_every_replica(replicated):
    mesh = json.loads((replicated.log_dir / "data" / "mesh.json").read_text())
    for name in ("query-embedder", "ingest"):
        addrs = replicated.addrs[name].split(",")
        assert len(addrs) == 2 and len(set(addrs)) == 2 and mesh[name] == replicated.addrs[name]
        assert len(replicated.metrics[name].split(",")) == 2 and mesh["metrics"][name] == replicated.metrics[name]
        assert all(grpc_serving(a) for a in addrs)
    assert "," not in replicated.addrs["router"]


def test_two_query_embedders_share_the_load_and_one_killed_loses_no_request(replicated):
    mesh = replicated
    addrs, metrics = mesh.addrs["query-embedder"].split(","), mesh.metrics["query-embedder"].split(",")

    async def scenario() -> dict[str, object]:
        seen = {"ok": 0, "failed": 0}
        stop = asyncio.Event()
        async with aio_channel(mesh.router, Settings()) as ch:
            stub = router_pb2_grpc.RouterStub(ch)

            async def client(k: int) -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        await stub.Embed(router_pb2.EmbedRequest(texts=[f"câu hỏi số {k}-{i} về thuế"],
                                                                 kind=common_pb2.EMBED_KIND_QUERY), timeout=10)
                        seen["ok"] += 1
                    except grpc.aio.AioRpcError as exc:
                        seen["failed"] += 1
                        print("query failed:", exc.code(), exc.details())

            load = [asyncio.create_task(client(k)) for k in range(4)]
            try:
                await asyncio.sleep(1.0)                          # steady state
                before = [_encodes(m) for m in metrics]
                await asyncio.sleep(3.0)
                share = [_encodes(m) - b for m, b in zip(metrics, before, strict=True)]

                victim = _pid_on_port(mesh, addrs[1])
                assert victim is not None, f"no child of vien up serves {addrs[1]}"
                os.kill(victim, signal.SIGKILL)                   # under load
                survivor0, ok0 = _encodes(metrics[0]), seen["ok"]
                await asyncio.sleep(1.0)
                down = {"ok": seen["ok"] - ok0, "survivor": _encodes(metrics[0]) - survivor0}
                # `vien up` restarts it (back-off 0.5 s) and, once it is SERVING, the router sends it requests
                await asyncio.to_thread(wait_for, lambda: _pid_on_port(mesh, addrs[1]) not in (None, victim)
                                        and grpc_serving(addrs[1]), 120, "the killed query-embedder back")
                await asyncio.to_thread(wait_for, lambda: _encodes(metrics[1]) >= 20, 30,
                                        "traffic on the restarted query-embedder")
            finally:
                stop.set()
                await asyncio.gather(*load)
        return {**seen, "share": share, "down": down}

    r = asyncio.run(scenario())
    print(f"two query-embedders: {r}")
    share = r["share"]
    assert sum(share) > 20, share
    assert all(0.35 <= s / sum(share) <= 0.65 for s in share), share  # round_robin: each about half
    assert r["failed"] == 0, r                                           # in-flight RPCs were retried
    # the survivor took the load (the two counts are read a few ms apart, hence not equal)
    assert r["down"]["ok"] > 5 and r["down"]["survivor"] >= 0.8 * r["down"]["ok"], r


def _ingest_figures(metrics: str) -> tuple[float, float]:
    """(partitions owned, events applied) of one ingest worker."""
    s = scrape(metrics)
    return (value(s, "vien_ingest_assigned_partitions") or 0.0,
            sum(value(s, "vien_ingest_events_total", outcome=o) or 0.0
                for o in ("upserted", "deleted", "stale", "unchanged")))


def test_two_ingest_workers_split_partitions_and_the_survivor_of_a_kill_takes_over(replicated, tmp_path):
    mesh, tenant, coll = replicated, "replicas", "vien_e5_small"
    topic, dlq, group = "scale.documents", "scale.documents.dlq", "scale-ingest"
    asyncio.run(ensure_topics(mesh.addrs["kafka"], {topic: DEFAULT_DOCUMENT_PARTITIONS, dlq: 1}))
    env = {"VIEN_KAFKA_BOOTSTRAP": mesh.addrs["kafka"], "VIEN_KAFKA_LOCAL": "1", "VIEN_DOCUMENTS_TOPIC": topic,
           "VIEN_DLQ_TOPIC": dlq, "VIEN_INGEST_GROUP": group, "VIEN_DOC_EMBEDDER_ADDR": mesh.addrs["doc-embedder"],
           "VIEN_STORE_ADDR": mesh.addrs["store"], "VIEN_TRACING": "0"}
    metrics = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    workers = [serve_process("ingest", free_port(), env, int(m.rsplit(":", 1)[1]), tmp_path / f"ingest{i}.log")
               for i, m in enumerate(metrics)]
    store = RemoteStore(mesh.addrs["store"])
    try:
        # the group settles with two partitions each, before anything is published
        wait_for(lambda: [_ingest_figures(m)[0] for m in metrics] == [2.0, 2.0], 60, "a 2 + 2 partition split")
        events, expected = mixed_stream(7, docs=600, events=1000, tenant=tenant)
        path = tmp_path / "stream.jsonl"
        path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events), encoding="utf-8")
        out = vien("publish", str(path), "--kafka", mesh.addrs["kafka"], "--topic", topic)
        assert out.returncode == 0, out.stderr
        live = sum(e is not None for e in expected.values())
        wait_for(lambda: all(_ingest_figures(m)[1] > 0 for m in metrics), 120, "both workers to apply events")
        wait_for(lambda: store.count(coll, SearchFilter(tenant=tenant)) >= live // 4, 240, "a quarter of the stream")
        workers[1].send_signal(signal.SIGKILL)                            # mid-stream
        workers[1].wait()
        done_before = store.count(coll, SearchFilter(tenant=tenant))
        assert done_before < live, "the stream ended before the kill: make it longer"
        # the survivor owns all four partitions once the group evicts the dead member (session timeout)
        wait_for(lambda: _ingest_figures(metrics[0])[0] == 4.0, 60, "the survivor to take over every partition")
        wait_for(lambda: asyncio.run(committed_total(mesh.addrs["kafka"], topic, group)) == len(events), 300,
                 "every event committed")
        wrong = wrong_documents(store, coll, tenant, expected)
        assert store.count(coll, SearchFilter(tenant=tenant)) == live
        print(f"ingest workers: {len(events)} events, {live} live docs, {done_before} points at the kill")
        assert not wrong, wrong[:20]
    finally:
        store.close()
        for w in workers:
            if w.poll() is None:
                w.terminate()
                w.wait(timeout=30)
