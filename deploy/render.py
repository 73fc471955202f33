#!/usr/bin/env python3
"""Render, lint and validate helm/vien without a helm binary or a cluster.

helm-python-sdk binds Helm v4's Go SDK (libhelm_c.so, shipped in its wheel) with ctypes: it loads the
chart, lints it and renders the templates offline, exactly as `helm template` would. kubernetes-validate
checks every rendered object against the Kubernetes OpenAPI schemas (strict: unknown fields fail).

    python deploy/render.py                          # rendered manifests (default values) on stdout
    python deploy/render.py -f deploy/values-gpu.yaml --set vllm.replicas=4
    python deploy/render.py --check                  # lint + render + validate default, GPU (+ operator kit), local
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "vien"
GPU_VALUES = ROOT / "deploy" / "values-gpu.yaml"
LOCAL_VALUES = ROOT / "deploy" / "values-local.yaml"   # the pod harness's (deploy/pods.py)
# the optional operator kit, all on: dashboard, alerts, KEDA for ingest and vLLM
OPS_KIT = {"metrics": {"grafanaDashboard": {"enabled": True}, "prometheusRule": {"enabled": True}},
           "vllm": {"keda": {"enabled": True}}, "services": {"ingest": {"keda": {"enabled": True}}}}
# Validated against: the oldest version the chart supports (Chart.yaml kubeVersion) and a recent one.
KUBE_VERSIONS = ("1.30.0", "1.34.0")
# Custom resources have no schema in kubernetes-validate; they are checked by the tests instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule"),
             ("keda.sh/v1alpha1", "ScaledObject")}
# deploy/values-gpu.yaml leaves its model revisions empty (the chart refuses to install it until they are
# pinned); --check and the tests render it with this stand-in commit sha in every empty revision.
EXAMPLE_SHA = "0123456789abcdef0123456789abcdef01234567"
RELEASE = "vien"
NAMESPACE = "vien"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def pin_example_revisions(values: dict[str, Any]) -> dict[str, Any]:
    """values with EXAMPLE_SHA in every empty model revision (vllm.model, models.fetch[])."""
    out = deep_merge(values, {})
    vllm = out.get("vllm", {})
    if "model" in vllm and not vllm["model"].get("revision"):
        out["vllm"] = deep_merge(vllm, {"model": {"revision": EXAMPLE_SHA}})
    models = out.get("models", {})
    if models.get("fetch"):
        out["models"] = dict(models, fetch=[dict(m, revision=m.get("revision") or EXAMPLE_SHA)
                                            for m in models["fetch"]])
    return out


def load_values(files: list[str | Path] = (), sets: list[str] = ()) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in files:
        values = deep_merge(values, yaml.safe_load(Path(f).read_text(encoding="utf-8")) or {})
    for s in sets:
        values = deep_merge(values, helm.parse_set_string(s))
    return values


def render(values: dict[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE,
           is_upgrade: bool = False) -> dict[str, str]:
    """template path -> rendered text (NOTES.txt included), as `helm template` renders it."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values or {})
        return chart.render(values or {}, name=name, namespace=namespace,
                            is_install=not is_upgrade, is_upgrade=is_upgrade)


def objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a render, in template order."""
    out = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        out.extend(d for d in yaml.safe_load_all(rendered[path]) if d)
    return out


def lint(values: dict[str, Any] | None = None, kube_version: str = KUBE_VERSIONS[-1]) -> list[str]:
    """Lint findings of warning severity or worse (strict: warnings count)."""
    report = helm.lint(CHART, values or {}, strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}")
    problems = [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2]
    return problems + list(report.get("errors") or [])


def validate(objs: list[dict[str, Any]], kube_version: str) -> list[str]:
    """kubernetes-validate (strict) errors, one line per invalid object; CRD kinds are skipped."""
    errors = []
    for obj in objs:
        if (obj.get("apiVersion"), obj.get("kind")) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} (k8s {kube_version}): {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: no schema for {obj['apiVersion']} "
                          f"in Kubernetes {kube_version}")
    return errors


def check() -> int:
    failures = 0
    for label, files, extra in (("default values", [], {}), ("deploy/values-gpu.yaml", [GPU_VALUES], {}),
                                ("deploy/values-gpu.yaml + operator kit", [GPU_VALUES], OPS_KIT),
                                ("deploy/values-local.yaml", [LOCAL_VALUES], {})):
        values = deep_merge(pin_example_revisions(load_values(files)), extra)
        problems = lint(values)
        objs = objects(render(values))
        for kv in KUBE_VERSIONS:
            problems += validate(objs, kv)
        kinds: dict[str, int] = {}
        for o in objs:
            kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
        status = "ok" if not problems else f"{len(problems)} problem(s)"
        print(f"helm-check {label}: {len(objs)} objects {dict(sorted(kinds.items()))}; lint + kubernetes-validate "
              f"{'/'.join(KUBE_VERSIONS)}: {status}")
        for p in problems:
            print(f"  {p}")
        failures += len(problems)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-f", "--values", action="append", default=[], help="values file (repeatable)")
    ap.add_argument("--set", action="append", default=[], help="helm --set expression (repeatable)")
    ap.add_argument("--name", default=RELEASE)
    ap.add_argument("--namespace", default=NAMESPACE)
    ap.add_argument("--check", action="store_true", help="lint, render and validate default and GPU values")
    ns = ap.parse_args(argv)
    if ns.check:
        return check()
    rendered = render(load_values(ns.values, ns.set), name=ns.name, namespace=ns.namespace)
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        text = rendered[path].strip()
        if text:
            sys.stdout.write(f"---\n# Source: {path}\n{text.removeprefix('---').lstrip()}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
