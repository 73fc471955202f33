"""Protobuf is the single source of truth: the checked-in generated code must match proto/."""

from __future__ import annotations

from pathlib import Path

from vien.protogen import SERVICES, generate


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    assert fresh, "protoc produced nothing"
    checked_in = SERVICES / "vien" / "v1"
    stale = []
    for f in fresh:
        mine = checked_in / f.name
        if not mine.exists() or mine.read_bytes() != f.read_bytes():
            stale.append(f.name)
    extra = {p.name for p in checked_in.glob("*_pb2*.py*")} - {f.name for f in fresh}
    assert not stale and not extra, f"stale generated code {stale} / orphans {sorted(extra)}: run `make proto`"


def test_every_service_has_its_proto() -> None:
    from vien.v1 import embedder_pb2, router_pb2, search_pb2

    assert set(router_pb2.DESCRIPTOR.services_by_name) == {"Router"}
    assert set(embedder_pb2.DESCRIPTOR.services_by_name) == {"QueryEmbedder", "DocEmbedder"}
    assert set(search_pb2.DESCRIPTOR.services_by_name) == {"Search"}
    assert Path(SERVICES.parent / "proto" / "vien" / "v1" / "documents.proto").exists()
