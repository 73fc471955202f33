"""Helpers for tests/test_helm.py: the chart rendered offline (deploy/render.py, helm-python-sdk)."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("vien_deploy_render", ROOT / "deploy" / "render.py")
assert _spec and _spec.loader
render_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_mod)

GPU_VALUES = render_mod.GPU_VALUES
KUBE_VERSIONS = render_mod.KUBE_VERSIONS
CRD_KINDS = render_mod.CRD_KINDS
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
# chart values key -> `vien serve` name
SERVICE_KEYS = {"router": "router", "queryEmbedder": "query-embedder", "docEmbedder": "doc-embedder",
                "search": "search", "ingest": "ingest", "store": "store", "gateway": "gateway"}


# Every service the chart deploys (`vien serve NAME`): the gRPC ones (grpc.health.v1 probes) and the
# OpenAI-compatible HTTP gateway (uvicorn, httpGet probes on /healthz).
CHART_SERVICES = frozenset(SERVICE_KEYS.values())
HTTP_SERVICES = frozenset({"gateway"})
GRPC_SERVICES = CHART_SERVICES - HTTP_SERVICES


def values(name: str) -> dict[str, Any]:
    if name == "gpu":   # its revisions are empty until an operator pins them: the example sha stands in
        return render_mod.pin_example_revisions(render_mod.load_values([GPU_VALUES]))
    return render_mod.load_values([])


def render_objects(vals: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return render_mod.objects(render_mod.render(vals or {}))


@cache
def rendered(name: str) -> tuple[dict[str, Any], ...]:
    """Objects of the default ("default") or GPU ("gpu") render; cached (treat as read-only)."""
    return tuple(render_objects(values(name)))


def find(objs, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objs, kind: str, name: str) -> dict[str, Any]:
    found = find(objs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def component(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]


def containers(obj: dict[str, Any], init: bool = True) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    return list(spec.get("containers", [])) + (list(spec.get("initContainers", [])) if init else [])


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def vien_deployments(objs) -> dict[str, dict[str, Any]]:
    """`vien serve` component -> its Deployment."""
    return {component(o): o for o in find(objs, "Deployment") if o["metadata"]["labels"].get("vien.dev/mesh")}
