"""The Helm chart (helm/vien) and the container files (deploy/), checked without a cluster.

helm-python-sdk (Helm v4's Go SDK in a shared library) lints and renders the chart offline;
kubernetes-validate checks every rendered object against the Kubernetes schemas. The other tests assert
the properties a GPU install depends on, on the rendered manifests of the default values and of
deploy/values-gpu.yaml. Part of `make helm-check` and `make test`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import pytest
import yaml
from helm_fixtures import (
    CHART_SERVICES,
    CRD_KINDS,
    GRPC_SERVICES,
    HTTP_SERVICES,
    KUBE_VERSIONS,
    ROOT,
    SERVICE_KEYS,
    WORKLOAD_KINDS,
    containers,
    env_of,
    find,
    one,
    pod_spec,
    render_mod,
    render_objects,
    rendered,
    values,
    vien_deployments,
)

from vien.runtime.balancing import channel_target
from vien.runtime.config import VienConfig
from vien.runtime.grpc_server import LIVENESS
from vien_tools.cli.registry import SERVICES

VARIANTS = ["default", "gpu"]
SECRETISH = re.compile(r"(KEY|TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL)", re.I)


# ---------- lint, render, validate ----------

@pytest.mark.parametrize("variant", VARIANTS)
def test_chart_lints_clean(variant):
    assert render_mod.lint(values(variant)) == []


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_manifest_validates_against_kubernetes_schemas(variant, kube_version):
    objs = rendered(variant)
    assert len(objs) > 30
    assert render_mod.validate(list(objs), kube_version) == []


def test_validation_catches_a_broken_manifest():
    dep = json.loads(json.dumps(one(rendered("default"), "Deployment", "vien-router")))
    pod_spec(dep)["containers"][0]["livenessProbe"]["grpc"]["port"] = "grpc-port"
    pod_spec(dep)["containers"][0]["bogusField"] = 1
    assert render_mod.validate([dep], KUBE_VERSIONS[-1])


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_known_custom_resources_are_rendered(variant):
    for o in rendered(variant):
        api = o["apiVersion"]
        if "." in api.split("/")[0] and not api.split("/")[0].endswith("k8s.io"):
            assert (api, o["kind"]) in CRD_KINDS


def test_chart_services_are_the_vien_services():
    with helm.Chart.load(render_mod.CHART) as chart:
        chart_services = set(chart.values["services"])
    assert {SERVICE_KEYS[k] for k in chart_services} == CHART_SERVICES
    assert set(SERVICES) >= CHART_SERVICES   # every chart service is a real `vien serve` name


# ---------- every service: Deployment, Service, probes, HPA, PDB, NetworkPolicy, ServiceAccount ----------

@pytest.mark.parametrize("variant", VARIANTS)
def test_every_service_has_its_objects_and_grpc_health_probes(variant):
    objs = rendered(variant)
    deployments = vien_deployments(objs)
    # production: no local store service; everything else runs
    assert set(deployments) == CHART_SERVICES - {"store"}
    for name, dep in deployments.items():
        c = pod_spec(dep)["containers"][0]
        proto = "http" if name in HTTP_SERVICES else "grpc"
        port = next(p["containerPort"] for p in c["ports"] if p["name"] == proto)
        assert c["command"][:3] == ["vien", "serve", name]
        assert c["command"][c["command"].index("--port") + 1] == str(port)
        assert c["command"][c["command"].index("--host") + 1] == "0.0.0.0"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if name in HTTP_SERVICES:
                continue   # test_gateway_is_http_with_healthz_probes
            assert c[probe]["grpc"]["port"] == port, f"{name}: {probe} is not a grpc.health.v1 probe on {port}"
            # readiness (and startup): overall health "", which follows the dependencies; liveness: the
            # "liveness" name, SERVING while the server answers (vien.runtime.grpc_server.LIVENESS)
            want = LIVENESS if probe == "livenessProbe" else ""
            assert c[probe].get("grpc", {}).get("service", "") == want, f"{name}: {probe}"
        svc = one(objs, "Service", dep["metadata"]["name"])
        assert {"name": proto, "port": port}.items() <= svc["spec"]["ports"][0].items()
        assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
        sa = one(objs, "ServiceAccount", dep["metadata"]["name"])
        assert pod_spec(dep)["serviceAccountName"] == sa["metadata"]["name"]
        pdb = one(objs, "PodDisruptionBudget", dep["metadata"]["name"])
        assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
        hpa = one(objs, "HorizontalPodAutoscaler", dep["metadata"]["name"])
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": dep["metadata"]["name"]}
        assert "replicas" not in dep["spec"], f"{name}: the HPA owns replicas"
        one(objs, "NetworkPolicy", dep["metadata"]["name"])
        sec = pod_spec(dep)["securityContext"]
        assert sec["runAsNonRoot"] is True and sec["runAsUser"] != 0
        assert c["securityContext"]["allowPrivilegeEscalation"] is False


BALANCED = {"router": "VIEN_ROUTER_ADDR", "query-embedder": "VIEN_QUERY_EMBEDDER_ADDR",
            "doc-embedder": "VIEN_DOC_EMBEDDER_ADDR", "search": "VIEN_SEARCH_ADDR"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_grpc_hops_balance_requests_over_headless_services(variant):
    """Callers reach router, query-embedder, doc-embedder and search through dns:/// targets on headless
    Services (every ready pod's IP), which the code's channels spread round_robin over; the servers cap
    connection age so that callers re-resolve and reach pods added later (docs/deploy.md)."""
    objs = rendered(variant)
    deployments = vien_deployments(objs)
    for name, env_name in BALANCED.items():
        dep = deployments[name]
        port = next(p["containerPort"] for p in pod_spec(dep)["containers"][0]["ports"] if p["name"] == "grpc")
        headless = one(objs, "Service", f"{dep['metadata']['name']}-headless")
        assert headless["spec"]["clusterIP"] == "None"
        assert headless["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
        assert [p["name"] for p in headless["spec"]["ports"]] == ["grpc"]   # not scraped twice
        assert headless["spec"]["ports"][0]["port"] == port
        assert one(objs, "Service", dep["metadata"]["name"])["spec"].get("clusterIP") != "None"
        target = f"dns:///{headless['metadata']['name']}:{port}"
        assert channel_target(target) == target   # the form vien.runtime.balancing passes to gRPC as is
        for caller in deployments.values():
            assert env_of(pod_spec(caller)["containers"][0])[env_name]["value"] == target
    for dep in deployments.values():
        env = env_of(pod_spec(dep)["containers"][0])
        assert int(env["VIEN_MAX_CONNECTION_AGE_S"]["value"]) > 0
        assert int(env["VIEN_MAX_CONNECTION_AGE_GRACE_S"]["value"]) > 0
    assert not find(objs, "Service", "vien-store-headless") and not find(objs, "Service", "vien-ingest-headless")


def test_service_monitors_match_the_metrics_ports():
    objs = rendered("gpu")
    monitors = {m["metadata"]["name"]: m for m in find(objs, "ServiceMonitor")}
    for dep in vien_deployments(objs).values():
        name = dep["metadata"]["name"]
        svc = one(objs, "Service", name)
        assert monitors[name]["spec"]["endpoints"][0]["port"] in {p["name"] for p in svc["spec"]["ports"]}
        assert monitors[name]["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]
    assert not find(rendered("default"), "ServiceMonitor")   # off unless the operator is there


def _peers(policy) -> list[str]:
    comps = []
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), f"{policy['metadata']['name']}: an ingress rule without `from` admits everyone"
        for peer in rule["from"]:
            if "podSelector" in peer:
                comps.append(peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"])
    return comps


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_the_mesh_talks_to_the_embedders_and_vllm(variant):
    objs = rendered(variant)
    qe = one(objs, "NetworkPolicy", "vien-query-embedder")
    de = one(objs, "NetworkPolicy", "vien-doc-embedder")
    assert qe["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "query-embedder"
    assert set(_peers(qe)) == {"router"}
    assert set(_peers(de)) == {"router", "ingest"}
    if variant == "gpu":
        assert set(_peers(one(objs, "NetworkPolicy", "vien-vllm"))) == {"doc-embedder"}
    else:
        assert set(_peers(one(objs, "NetworkPolicy", "vien-redis"))) == {"query-embedder"}
        assert set(_peers(one(objs, "NetworkPolicy", "vien-qdrant"))) == {"search", "ingest"}


# ---------- vLLM ----------

def test_vllm_runs_qwen3_on_gpu_nodes_with_values_from_the_chart():
    vals = values("gpu")["vllm"]
    objs = rendered("gpu")
    dep = one(objs, "Deployment", "vien-vllm")
    spec = pod_spec(dep)
    c = spec["containers"][0]
    assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in spec["tolerations"])
    assert spec.get("nodeSelector", {}) == vals["nodeSelector"]   # {}: the GPU request places it
    args = c["args"]

    def arg(flag):
        return args[args.index(flag) + 1]

    assert args[0] == vals["model"]["id"] == "Qwen/Qwen3-Embedding-0.6B"
    assert arg("--runner") == "pooling"
    assert json.loads(arg("--hf-overrides")) == {"is_matryoshka": True}
    assert arg("--revision") == vals["model"]["revision"]
    assert arg("--dtype") == vals["dtype"]
    assert arg("--max-model-len") == str(vals["maxModelLen"])
    assert arg("--max-num-batched-tokens") == str(vals["maxNumBatchedTokens"])
    # weight loading gets a long startup budget before liveness starts
    sp = c["startupProbe"]
    assert sp["periodSeconds"] * sp["failureThreshold"] >= 15 * 60
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    # model cache on a PVC (HF_HOME), shared memory for the workers
    env = env_of(c)
    assert env["HF_HOME"]["value"].startswith("/cache")
    cache_vol = next(v for v in spec["volumes"] if v["name"] == "cache")
    one(objs, "PersistentVolumeClaim", cache_vol["persistentVolumeClaim"]["claimName"])
    assert {"name": "cache", "mountPath": "/cache"} in c["volumeMounts"]
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "HF_TOKEN"
    assert env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is False


@pytest.mark.parametrize("size", ["4B", "8B"])
def test_vllm_model_size_is_a_value(size):
    vals = render_mod.deep_merge(values("gpu"), {"vllm": {"model": {"id": f"Qwen/Qwen3-Embedding-{size}"}}})
    c = pod_spec(one(render_objects(vals), "Deployment", "vien-vllm"))["containers"][0]
    assert c["args"][0] == f"Qwen/Qwen3-Embedding-{size}"


@pytest.mark.parametrize("where", ["vllm", "fetch"])
def test_an_unpinned_model_revision_is_refused(where):
    vals = values("gpu")
    if where == "vllm":
        vals["vllm"]["model"]["revision"] = "main"
    else:
        vals["models"]["fetch"][0]["revision"] = "main"
    with pytest.raises(helm.HelmError):
        render_mod.render(vals)
    vals2 = values("gpu")
    vals2["vllm"]["model"]["revision"] = ""
    # the template's own check (the schema lets an empty revision through)
    with pytest.raises(helm.HelmError, match="not pinned"), helm.Chart.load(render_mod.CHART) as chart:
        chart.render(vals2, name="vien", namespace="vien")


# ---------- one profiles config everywhere ----------

@pytest.mark.parametrize("variant", VARIANTS)
def test_the_same_profiles_config_reaches_every_service(variant):
    objs = rendered(variant)
    mount = values(variant).get("config", {}).get("mountPath", "/etc/vien")
    cm = one(objs, "ConfigMap", "vien-profiles")
    text = cm["data"]["profiles.yaml"]
    cfg = VienConfig.model_validate(yaml.safe_load(text))   # the services' own validation
    digest = hashlib.sha256(text.rstrip("\n").encode()).hexdigest()
    checksums = set()
    for name, dep in vien_deployments(objs).items():
        spec = pod_spec(dep)
        vol = next(v for v in spec["volumes"] if v["name"] == "config")
        assert vol["configMap"]["name"] == "vien-profiles", name
        for c in containers(dep):
            if c["name"].startswith("fetch-"):
                continue
            assert {"name": "config", "mountPath": "/etc/vien", "readOnly": True} in c["volumeMounts"], c["name"]
            assert env_of(c)["VIEN_CONFIG"]["value"] == f"{mount}/profiles.yaml"
        checksums.add(dep["spec"]["template"]["metadata"]["annotations"]["checksum/profiles"])
    assert len(checksums) == 1   # one file, and a change rolls every service
    assert checksums.pop() in {digest, hashlib.sha256((text.rstrip("\n") + "\n").encode()).hexdigest()}
    if variant == "gpu":
        enc = cfg.encoders[cfg.profiles[cfg.routing.default].document_encoder]
        assert enc.backend == "openai"
        vllm_svc = one(objs, "Service", "vien-vllm")
        assert enc.base_url == f"http://vien-vllm:{vllm_svc['spec']['ports'][0]['port']}/v1"
        served = pod_spec(one(objs, "Deployment", "vien-vllm"))["containers"][0]["args"]
        assert enc.model == served[served.index("--served-model-name") + 1]
        de = env_of(pod_spec(vien_deployments(objs)["doc-embedder"])["containers"][0])
        assert de[enc.api_key_env]["valueFrom"]["secretKeyRef"]["key"] == "VLLM_API_KEY"


def test_a_profiles_change_rolls_the_pods():
    vals = render_mod.deep_merge(values("default"), {})
    vals.setdefault("config", {})["profiles"] = values_default_profiles().replace("max_tokens: 512",
                                                                                  "max_tokens: 256")
    a = rendered("default")
    b = render_objects(vals)
    ann = "checksum/profiles"
    assert (vien_deployments(a)["router"]["spec"]["template"]["metadata"]["annotations"][ann]
            != vien_deployments(b)["router"]["spec"]["template"]["metadata"]["annotations"][ann])


def values_default_profiles() -> str:
    with helm.Chart.load(render_mod.CHART) as chart:
        return str(chart.values["config"]["profiles"])


# ---------- secrets ----------

@pytest.mark.parametrize("variant", VARIANTS)
def test_no_secret_in_plain_env(variant):
    vals = values(variant)
    marker = {"vllmApiKey": "sk-vllm-4f1c", "qdrantApiKey": "qd-9a7e", "hfToken": "hf_c0ffee",
              "redisUrl": "redis://:pw-77@r:6379/0", "gatewayApiKeys": "acme:sk-gw-5e11,beta:sk-gw-6a22"}
    vals = render_mod.deep_merge(vals, {"secrets": {"create": True, "existingSecret": "", "values": marker}})
    objs = render_objects(vals)
    secret = one(objs, "Secret", "vien-secrets")
    assert set(secret["stringData"].values()) == set(marker.values())
    for o in objs:
        if o["kind"] == "Secret":
            continue
        dumped = json.dumps(o)
        for v in marker.values():
            assert v not in dumped, f"{o['kind']}/{o['metadata']['name']} carries a secret value"
        if o["kind"] in WORKLOAD_KINDS:
            for c in containers(o):
                for e in c.get("env", []):
                    if SECRETISH.search(e["name"]):
                        assert "value" not in e and "secretKeyRef" in e["valueFrom"], (
                            f"{o['metadata']['name']}/{c['name']}: {e['name']} in plain env")


def test_schema_refuses_secrets_in_env_values():
    for bad in ({"env": {"VIEN_VLLM_API_KEY": "x"}},
                {"services": {"router": {"env": {"HF_TOKEN": "x"}}}},
                {"services": {"search": {"extraEnv": [{"name": "QDRANT_API_KEY", "value": "x"}]}}},
                {"redis": {"external": {"url": "redis://:hunter2@redis:6379/0"}}}):
        with pytest.raises(helm.HelmValuesError):
            render_mod.render(bad)
    ok = {"services": {"search": {"extraEnv": [
        {"name": "EXTRA_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}}}
    render_mod.render(ok)


# ---------- models for the ONNX services ----------

def test_default_models_are_built_by_an_init_container():
    objs = rendered("default")
    for name in ("query-embedder", "doc-embedder"):
        dep = vien_deployments(objs)[name]
        init = {c["name"]: c for c in pod_spec(dep).get("initContainers", [])}
        build = init["build-models"]
        assert build["command"] == ["vien", "build-models"]
        main = pod_spec(dep)["containers"][0]
        models_dir = env_of(main)["VIEN_MODELS_DIR"]["value"]
        assert env_of(build)["VIEN_MODELS_DIR"]["value"] == models_dir
        assert {"name": "models", "mountPath": models_dir} in build["volumeMounts"]
        assert {"name": "models", "mountPath": models_dir} in main["volumeMounts"]
        assert "emptyDir" in next(v for v in pod_spec(dep)["volumes"] if v["name"] == "models")
    assert "initContainers" not in pod_spec(vien_deployments(objs)["router"])


def test_gpu_query_model_is_fetched_at_a_pinned_revision_into_the_shared_volume():
    vals = values("gpu")
    fetch = vals["models"]["fetch"][0]
    objs = rendered("gpu")
    cfg = VienConfig.model_validate(yaml.safe_load(one(objs, "ConfigMap", "vien-profiles")["data"]["profiles.yaml"]))
    query_enc = cfg.encoders[cfg.profiles[cfg.routing.default].query_encoder]
    dep = vien_deployments(objs)["query-embedder"]
    init = next(c for c in pod_spec(dep)["initContainers"] if c["name"].startswith("fetch-"))
    env = env_of(init)
    assert env["REPO"]["value"] == fetch["repo"]
    assert env["REVISION"]["value"] == fetch["revision"]
    assert env["DEST"]["value"] == query_enc.model   # the profile loads what the init container fetched
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "HF_TOKEN"
    vol = next(v for v in pod_spec(dep)["volumes"] if v["name"] == "models")
    one(objs, "PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"])


# ---------- dependencies: in-chart or external ----------

def test_default_deploys_in_chart_dependencies_and_wires_them():
    objs = rendered("default")
    for kind, name in (("StatefulSet", "vien-qdrant"), ("StatefulSet", "vien-kafka"),
                       ("Deployment", "vien-redis"), ("Deployment", "vien-otel-collector")):
        one(objs, kind, name)
    deps = vien_deployments(objs)
    search = env_of(pod_spec(deps["search"])["containers"][0])
    ingest = env_of(pod_spec(deps["ingest"])["containers"][0])
    assert search["VIEN_VECTOR_STORE"]["value"] == ingest["VIEN_VECTOR_STORE"]["value"] == "qdrant:http://vien-qdrant:6334"
    assert ingest["VIEN_KAFKA_BOOTSTRAP"]["value"] == "vien-kafka:9092"
    qe = env_of(pod_spec(deps["query-embedder"])["containers"][0])
    assert qe["VIEN_REDIS_URL"]["value"] == "redis://vien-redis:6379/0"
    assert qe["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://vien-otel-collector:4317"
    assert not find(objs, "Deployment", "vien-store")


def test_gpu_uses_external_endpoints():
    vals = values("gpu")
    objs = rendered("gpu")
    assert not find(objs, "StatefulSet")     # no in-chart Kafka or Qdrant
    ingest = env_of(pod_spec(vien_deployments(objs)["ingest"])["containers"][0])
    assert ingest["VIEN_VECTOR_STORE"]["value"] == f"qdrant:{vals['qdrant']['external']['url']}"
    assert ingest["VIEN_KAFKA_BOOTSTRAP"]["value"] == vals["kafka"]["external"]["bootstrap"]
    assert ingest["VIEN_QDRANT_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == vals["secrets"]["existingSecret"]
    assert not find(objs, "Secret")          # an existing Secret is used, none rendered


@pytest.mark.parametrize("variant", VARIANTS)
def test_topics_are_created_by_a_hook_job(variant):
    vals = values(variant)
    partitions = vals.get("kafka", {}).get("topics", {}).get("partitions", 12)
    job = one(rendered(variant), "Job", "vien-kafka-topics")
    ann = job["metadata"]["annotations"]
    assert set(ann["helm.sh/hook"].split(",")) == {"post-install", "post-upgrade"}
    env = env_of(pod_spec(job)["containers"][0])
    assert env["PARTITIONS"]["value"] == str(partitions)
    assert env["TOPIC"]["value"] == "vien.documents" and env["DLQ"]["value"] == "vien.documents.dlq"


@pytest.mark.parametrize("variant", VARIANTS)
def test_ingest_scales_within_the_topic_partitions(variant):
    vals = values(variant)
    partitions = vals.get("kafka", {}).get("topics", {}).get("partitions", 12)
    hpa = one(rendered(variant), "HorizontalPodAutoscaler", "vien-ingest")
    assert hpa["spec"]["maxReplicas"] <= partitions
    too_many = render_mod.deep_merge(vals, {"services": {"ingest": {"autoscaling": {"maxReplicas": partitions + 1}}}})
    with pytest.raises(helm.HelmError, match="partitions"):
        render_mod.render(too_many)


def test_ingest_can_scale_on_lag_with_keda():
    objs = render_objects({"services": {"ingest": {"keda": {"enabled": True}}}})
    so = one(objs, "ScaledObject", "vien-ingest")
    assert so["spec"]["maxReplicaCount"] <= 12
    assert so["spec"]["triggers"][0]["metadata"]["consumerGroup"] == "vien-ingest"
    assert not find(objs, "HorizontalPodAutoscaler", "vien-ingest")
    assert "replicas" not in vien_deployments(objs)["ingest"]["spec"]


def test_store_is_the_fallback_without_qdrant():
    objs = render_objects({"qdrant": {"enabled": False}, "services": {"store": {"enabled": True}}})
    search = env_of(pod_spec(vien_deployments(objs)["search"])["containers"][0])
    assert search["VIEN_VECTOR_STORE"]["value"] == "remote:vien-store:50054"
    with pytest.raises(helm.HelmError, match="no vector store"):
        render_mod.render({"qdrant": {"enabled": False}})


# ---------- the OpenAI-compatible HTTP gateway ----------

def _gateway(objs) -> tuple[dict, dict]:
    dep = vien_deployments(objs)["gateway"]
    return dep, pod_spec(dep)["containers"][0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_gateway_is_http_with_healthz_probes(variant):
    objs = rendered(variant)
    dep, c = _gateway(objs)
    port = values(variant).get("services", {}).get("gateway", {}).get("port", 50057)
    assert c["command"] == ["vien", "serve", "gateway", "--host", "0.0.0.0", "--port", str(port)]
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["http"] == port
    assert "grpc" not in {p["name"] for p in c["ports"]}
    for probe in ("startupProbe", "readinessProbe"):
        assert "grpc" not in c[probe], f"gateway: {probe} is a gRPC probe; the gateway speaks HTTP"
        get = c[probe].get("httpGet")
        assert get and get["path"] == "/healthz", f"gateway: {probe} is not an HTTP probe on /healthz"
        assert get["port"] in ("http", port)
    # liveness must not follow the router (a router outage would otherwise restart every gateway)
    assert c["livenessProbe"].get("tcpSocket", {}).get("port") in ("http", port), c["livenessProbe"]
    sp = c["startupProbe"]
    assert sp["periodSeconds"] * sp["failureThreshold"] >= 120   # the router comes up first
    env = env_of(c)
    assert env["VIEN_ROUTER_ADDR"]["value"] == "dns:///vien-router-headless:50051"
    assert env["VIEN_HTTP_ADDR"]["value"].rsplit(":", 1)[1] == str(port)
    assert "initContainers" not in pod_spec(dep)                  # no models: it only calls the router
    svc = one(objs, "Service", "vien-gateway")
    http = next(p for p in svc["spec"]["ports"] if p["name"] == "http")
    assert http["port"] == port and http["targetPort"] == "http" and http["appProtocol"] == "http"
    if variant == "gpu":   # it has metrics (vien_http_requests_total): scraped like the others
        mon = one(objs, "ServiceMonitor", "vien-gateway")
        assert mon["spec"]["endpoints"][0]["port"] == "metrics"
    assert not find(objs, "Ingress")   # off by default


def _admits(policy: dict, component: str | None, port: int) -> bool:
    """Does an ingress rule of `policy` let pods of `component` (None: any pod) reach `port`?"""
    for rule in policy["spec"].get("ingress", []):
        if not any(p.get("port") == port for p in rule.get("ports", [])):
            continue
        if "from" not in rule:
            return True
        for peer in rule["from"]:
            labels = peer.get("podSelector", {}).get("matchLabels", {})
            if "namespaceSelector" not in peer and labels.get("app.kubernetes.io/component") == component:
                return True
    return False


@pytest.mark.parametrize("router_policy", [{}, {"allowAll": False, "from": ["search"]},
                                           {"allowAll": False, "from": []}])
def test_router_network_policy_admits_the_gateway(router_policy):
    vals = render_mod.deep_merge(values("gpu"), {"services": {"router": {"networkPolicy": router_policy}}})
    objs = render_objects(vals)
    router = one(objs, "NetworkPolicy", "vien-router")
    assert _admits(router, "gateway", 50051), f"router NetworkPolicy {router_policy} shuts out the gateway"
    if router_policy:
        assert not _admits(router, None, 50051)            # closed: only the listed peers (+ gateway)
        assert not _admits(router, "query-embedder", 50051)
        assert _admits(router, "search", 50051) == ("search" in router_policy["from"])


def test_a_closed_router_without_the_gateway_stays_closed():
    objs = render_objects({"services": {"gateway": {"enabled": False},
                                        "router": {"networkPolicy": {"allowAll": False, "from": []}}}})
    assert not find(objs, "Deployment", "vien-gateway")
    assert not _admits(one(objs, "NetworkPolicy", "vien-router"), "gateway", 50051)


@pytest.mark.parametrize("variant", VARIANTS)
def test_gateway_network_policy_open_ingress_egress_to_the_router_only(variant):
    objs = rendered(variant)
    pol = one(objs, "NetworkPolicy", "vien-gateway")
    assert set(pol["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert _admits(pol, None, 50057)                       # any client by default
    allowed = set()
    extra = values(variant).get("services", {}).get("gateway", {}).get("networkPolicy", {}).get("egress", [])
    rules = pol["spec"]["egress"]
    assert rules[len(rules) - len(extra):] == extra   # the configured extra rules, verbatim, last
    for rule in rules[:len(rules) - len(extra)]:
        ports = {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}
        if "to" not in rule:
            assert ports <= {(53, "UDP"), (53, "TCP")}, f"egress to anywhere beyond DNS: {rule}"
            allowed.add("dns")
            continue
        for peer in rule["to"]:
            comp = peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            allowed.add(comp)
            assert "namespaceSelector" not in peer
            assert ports == {(50051, "TCP")} if comp == "router" else ports == {(4317, "TCP")}
    otel = values(variant).get("otelCollector", {}).get("enabled", True)
    assert allowed == {"router", "dns"} | ({"otel-collector"} if otel else set())
    # closed: only the listed peers (an ingress controller's namespace) reach the HTTP port
    ingress_ns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    closed = render_objects({"services": {"gateway": {"networkPolicy": {"allowAll": False, "from": ["search"],
                                                                        "ingressFrom": [ingress_ns]}}}})
    pol = one(closed, "NetworkPolicy", "vien-gateway")
    assert not _admits(pol, None, 50057) and _admits(pol, "search", 50057)
    assert any(ingress_ns in r.get("from", []) and r["ports"][0]["port"] == 50057 for r in pol["spec"]["ingress"])


def test_gateway_ingress_is_optional_and_targets_the_http_port():
    objs = render_objects({"services": {"gateway": {"ingress": {
        "enabled": True, "className": "nginx",
        "hosts": [{"host": "embed.example.com", "paths": [{"path": "/v1", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "embed-tls", "hosts": ["embed.example.com"]}]}}}})
    ing = one(objs, "Ingress", "vien-gateway")
    assert ing["spec"]["ingressClassName"] == "nginx"
    rule = ing["spec"]["rules"][0]
    assert rule["host"] == "embed.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "vien-gateway" and backend["port"] == {"name": "http"}
    assert render_mod.validate(objs, KUBE_VERSIONS[-1]) == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_gateway_api_keys_come_from_secrets_never_plain_env(variant):
    combined = "acme:sk-gw-0b5e,beta:sk-gw-77c1"
    tenant_key = "sk-gw-tenant-91d0"
    vals = render_mod.deep_merge(values(variant), {
        "secrets": {"create": True, "existingSecret": "", "values": {"gatewayApiKeys": combined}},
        "services": {"gateway": {"apiKeys": {"fromSecret": [
            {"env": "VIEN_ACME_API_KEY", "secretName": "acme-keys", "key": "key"}]}}},
    })
    vals["config"] = dict(vals.get("config", {}))
    profiles = vals["config"].get("profiles") or values_default_profiles()
    assert "\n  api_keys: []\n" in profiles
    vals["config"]["profiles"] = profiles.replace(
        "\n  api_keys: []\n", "\n  api_keys:\n    - {tenant: acme, key_env: VIEN_ACME_API_KEY}\n")
    objs = render_objects(vals)
    _, c = _gateway(objs)
    env = env_of(c)
    keys = env["VIEN_API_KEYS"]
    assert "value" not in keys, "VIEN_API_KEYS in plain env"
    assert keys["valueFrom"]["secretKeyRef"] == {"name": "vien-secrets", "key": "VIEN_API_KEYS",
                                                 "optional": variant != "gpu"}
    acme = env["VIEN_ACME_API_KEY"]
    assert "value" not in acme
    assert acme["valueFrom"]["secretKeyRef"] == {"name": "acme-keys", "key": "key", "optional": False}
    # router and search are edges too (same key set: the gateway forwards the caller's key to the router)
    deps = vien_deployments(objs)
    for edge in ("router", "search"):
        edge_env = env_of(pod_spec(deps[edge])["containers"][0])
        assert edge_env["VIEN_API_KEYS"] == keys and edge_env["VIEN_ACME_API_KEY"] == acme, edge
    for internal in ("query-embedder", "doc-embedder", "ingest"):  # trust the mesh (NetworkPolicy, mTLS)
        assert "VIEN_API_KEYS" not in env_of(pod_spec(deps[internal])["containers"][0]), internal
    for e in c["env"]:
        if SECRETISH.search(e["name"]):
            assert "value" not in e and "secretKeyRef" in e["valueFrom"], f"gateway: {e['name']} in plain env"
    assert one(objs, "Secret", "vien-secrets")["stringData"]["VIEN_API_KEYS"] == combined
    for o in objs:
        if o["kind"] != "Secret":
            assert combined not in json.dumps(o) and "sk-gw-0b5e" not in json.dumps(o), o["metadata"]["name"]
    # the profiles file names keys only by key_env; an inline key (it would sit in the ConfigMap) is refused
    inline = dict(vals, config=dict(vals["config"], profiles=vals["config"]["profiles"].replace(
        "key_env: VIEN_ACME_API_KEY", f"key: {tenant_key}")))
    with pytest.raises(helm.HelmError, match="inline key"):
        render_mod.render(inline)
    # a key_env that no Secret delivers would stop the gateway at start: refused at render
    missing = render_mod.deep_merge(vals, {"services": {"gateway": {"apiKeys": {"fromSecret": []}}}})
    with pytest.raises(helm.HelmError, match="VIEN_ACME_API_KEY"):
        render_mod.render(missing)


def test_schema_refuses_gateway_keys_as_env_values():
    for bad in ({"services": {"gateway": {"env": {"VIEN_API_KEYS": "acme:sk-1"}}}},
                {"services": {"gateway": {"extraEnv": [{"name": "VIEN_ACME_API_KEY", "value": "sk-1"}]}}},
                {"env": {"VIEN_API_KEYS": "acme:sk-1"}},
                {"services": {"gateway": {"apiKeys": {"fromSecret": [{"env": "VIEN_ACME_API_KEY", "value": "sk"}]}}}}):
        with pytest.raises(helm.HelmValuesError):
            render_mod.render(bad)


def test_gateway_needs_the_router():
    with pytest.raises(helm.HelmError, match="router"):
        render_mod.render({"services": {"router": {"enabled": False}}})


# ---------- images ----------

def _stages(dockerfile: str) -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = None
    for line in dockerfile.splitlines():
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            current = m.group(2) or f"<{m.group(1)}>"
            stages[current] = []
        elif current and line.strip() and not line.lstrip().startswith("#"):
            stages[current].append(line)
    return stages


def test_dockerfile_runtime_is_non_root_without_build_tools_and_has_an_entry_point_per_service():
    stages = _stages((ROOT / "deploy" / "Dockerfile").read_text())
    assert "build" in stages and "runtime" in stages
    runtime = "\n".join(stages["runtime"])
    assert "build-essential" not in runtime and "apt-get install" not in runtime
    user = re.search(r"^USER\s+(\S+)", runtime, re.M)
    assert user and user.group(1).split(":")[0] not in ("0", "root")
    assert 'ENTRYPOINT ["vien"]' in runtime
    for name in CHART_SERVICES:
        assert name in stages, f"no target for {name}"
        assert any(f'CMD ["serve", "{name}"' in line for line in stages[name])
    assert "build-essential" in "\n".join(stages["build"])


def _compose() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "docker-compose.yaml").read_text())


def test_compose_file_is_a_full_stack_with_real_dependencies():
    doc = _compose()
    svcs = doc["services"]
    images = {n: s.get("image", "") for n, s in svcs.items()}
    assert images["kafka"].startswith("apache/kafka:")
    assert images["qdrant"].startswith("qdrant/qdrant:")
    assert images["redis"].startswith("redis:")
    assert images["jaeger"].startswith("jaegertracing/")
    for name in CHART_SERVICES - {"store"}:
        s = svcs[name]
        assert s["command"][:2] == ["serve", name]
        assert s["build"]["dockerfile"] == "deploy/Dockerfile"
        assert s["user"] != "0" and not str(s["user"]).startswith("0:")
        check = " ".join(s["healthcheck"]["test"])
        assert ("grpc_health" in check) if name in GRPC_SERVICES else ("/healthz" in check), name
        env = s["environment"]
        assert env["VIEN_CONFIG"] == "/etc/vien/profiles.yaml"
        assert env["VIEN_VECTOR_STORE"] == "qdrant:http://qdrant:6334"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http://jaeger:")
        for dep in s.get("depends_on", {}):
            assert dep in svcs
    assert "store" not in svcs
    for s in svcs.values():
        for vol in s.get("volumes", []):
            src = vol.split(":")[0]
            assert src.startswith("..") or src in doc["volumes"], vol
    assert svcs["models"]["command"] == ["build-models"]


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_docker_compose_config_accepts_the_file():
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=20)
    if probe.returncode != 0:
        pytest.skip("docker CLI without the compose plugin: the structure test above covers the file")
    out = subprocess.run(["docker", "compose", "-f", str(ROOT / "deploy" / "docker-compose.yaml"), "config", "-q"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


# ---------- day one on a GPU cluster (issue: "A chart that survives a real GPU cluster") ----------
# tests/test_pods.py runs the rendered pods; these check the same defects on the rendered manifests.

LOCAL_VALUES = render_mod.LOCAL_VALUES
VARIANTS3 = ["default", "gpu", "local"]


def _objs(variant: str) -> tuple[dict, ...]:
    if variant == "local":
        return tuple(render_objects(render_mod.load_values([LOCAL_VALUES])))
    return rendered(variant)


def _profiles(objs) -> VienConfig:
    return VienConfig.model_validate(yaml.safe_load(one(objs, "ConfigMap", "vien-profiles")["data"]["profiles.yaml"]))


def _model_dirs(objs, component: str) -> set[str]:
    """The directories a service loads models or tokenizers from (container paths), from the profiles:
    the query-embedder every query encoder, the doc-embedder its document encoders and (space guard) the
    query encoders, ingest the tokenizer of each profile's document side (its query encoder's when remote)."""
    cfg = _profiles(objs)
    models_dir = env_of(pod_spec(vien_deployments(objs)[component])["containers"][0])["VIEN_MODELS_DIR"]["value"]
    names: set[str] = set()
    for p in cfg.profiles.values():
        if component in ("query-embedder", "doc-embedder", "ingest"):
            names.add(p.query_encoder)
        if component in ("doc-embedder", "ingest"):
            names.add(p.document_encoder)
    out = set()
    for n in names:
        enc = cfg.encoders[n]
        if enc.backend == "onnx":
            out.add(f"{models_dir}/{enc.model.removeprefix('builtin:')}" if enc.model.startswith("builtin:")
                    else enc.model)
    return out


@pytest.mark.parametrize("variant", VARIANTS3)
def test_every_pod_mounts_the_models_it_loads_and_an_init_container_fills_them(variant):
    """ingest counts tokens with the document side's tokenizer from the models directory: before, only the
    embedders mounted it and ingest crash-looped (compose mounts /models everywhere, which hid it)."""
    objs = _objs(variant)
    for component in ("query-embedder", "doc-embedder", "ingest"):
        dep = vien_deployments(objs)[component]
        main = pod_spec(dep)["containers"][0]
        mounts = [m["mountPath"] for m in main["volumeMounts"]]
        inits = pod_spec(dep).get("initContainers", [])
        filled = {env_of(c)["DEST"]["value"] for c in inits if "DEST" in env_of(c)}
        built = any(c["name"] == "build-models" for c in inits)
        dirs = _model_dirs(objs, component)
        assert dirs, component
        for d in dirs:
            assert any(d == m or d.startswith(m + "/") for m in mounts), f"{component} loads {d}, mounts {mounts}"
            assert d in filled or built, f"{component}: nothing fills {d}"


@pytest.mark.parametrize("variant", VARIANTS3)
def test_liveness_asks_the_process_not_its_dependencies(variant):
    for name, dep in vien_deployments(_objs(variant)).items():
        c = pod_spec(dep)["containers"][0]
        live, ready = c["livenessProbe"], c["readinessProbe"]
        assert live != ready, f"{name}: liveness is the readiness check (a dependency outage restarts it)"
        if name in HTTP_SERVICES:
            assert "tcpSocket" in live
        else:
            assert live["grpc"]["service"] == LIVENESS and ready["grpc"].get("service", "") == ""


@pytest.mark.parametrize("variant", VARIANTS3)
def test_onnx_threads_come_from_the_cpu_request(variant):
    objs = _objs(variant)
    for name in ("query-embedder", "doc-embedder"):
        c = pod_spec(vien_deployments(objs)[name])["containers"][0]
        assert c["resources"]["requests"]["cpu"]
        ref = env_of(c)["VIEN_ORT_THREADS"]["valueFrom"]["resourceFieldRef"]
        assert ref == {"resource": "requests.cpu", "divisor": "1"}
    no_request = {"services": {"queryEmbedder": {"resources": {"requests": {"cpu": None, "memory": "1Gi"}}}}}
    c = pod_spec(vien_deployments(render_objects(no_request))["query-embedder"])["containers"][0]
    assert env_of(c)["VIEN_ORT_THREADS"]["value"] == "2"   # models.defaultThreads


@pytest.mark.parametrize("variant", VARIANTS3)
def test_query_embedder_threads_spin_briefly_only_on_the_cores_it_requested(variant):
    """Dedicated cores (a CPU request = its threads): bounded spinning on the query path; the doc-embedder
    (throughput, large batches) never spins, and nothing spins on cores it did not ask for."""
    deps = vien_deployments(_objs(variant))
    q = env_of(pod_spec(deps["query-embedder"])["containers"][0])
    assert q["VIEN_ORT_SPIN"]["value"] == "1" and q["VIEN_ORT_SPIN_US"]["value"] == "100"
    assert "VIEN_ORT_SPIN" not in env_of(pod_spec(deps["doc-embedder"])["containers"][0])
    no_request = {"services": {"queryEmbedder": {"resources": {"requests": {"cpu": None, "memory": "1Gi"}}}}}
    c = pod_spec(vien_deployments(render_objects(no_request))["query-embedder"])["containers"][0]
    assert "VIEN_ORT_SPIN" not in env_of(c)
    off = pod_spec(vien_deployments(render_objects({"models": {"querySpinMicroseconds": 0}}))["query-embedder"])
    assert "VIEN_ORT_SPIN" not in env_of(off["containers"][0])


def test_onnx_threads_env_is_capped_at_the_cores_and_checked(monkeypatch):
    from vien.models.onnx_encoder import default_threads, physical_cores

    monkeypatch.setenv("VIEN_ORT_THREADS", "1")
    assert default_threads() == 1
    monkeypatch.setenv("VIEN_ORT_THREADS", "4096")
    assert default_threads() == physical_cores()
    monkeypatch.setenv("VIEN_ORT_THREADS", "0")            # no CPU request: the cores
    assert default_threads() == physical_cores()
    monkeypatch.setenv("VIEN_ORT_THREADS", "2.5")
    with pytest.raises(ValueError, match="VIEN_ORT_THREADS"):
        default_threads()


def _min_replicas(objs, name: str) -> int:
    for kind, key in (("HorizontalPodAutoscaler", "minReplicas"), ("ScaledObject", "minReplicaCount")):
        found = find(objs, kind, name)
        if found:
            return int(found[0]["spec"][key])
    return int(one(objs, "Deployment", name)["spec"]["replicas"])


@pytest.mark.parametrize("variant", ["default", "gpu", "local", "keda"])
def test_every_pdb_lets_a_drain_through_at_minimum_replicas(variant):
    objs = (render_objects({"services": {"ingest": {"keda": {"enabled": True}}}}) if variant == "keda"
            else _objs(variant))
    pdbs = find(objs, "PodDisruptionBudget")
    assert pdbs
    for pdb in pdbs:
        name, spec = pdb["metadata"]["name"], pdb["spec"]
        n = _min_replicas(objs, name)
        allowed = int(spec["maxUnavailable"]) if "maxUnavailable" in spec else n - int(spec["minAvailable"])
        assert allowed >= 1, f"{name}: {spec} at {n} replica(s) blocks a node drain"


def test_a_pdb_that_would_block_drains_is_refused():
    vals = {"services": {"ingest": {"pdb": {"enabled": True, "minAvailable": 1, "maxUnavailable": None}}}}  # HPA min 1
    with pytest.raises(helm.HelmError, match="block node drains"):
        render_objects(vals)
    ok = render_objects({"services": {"router": {"pdb": {"minAvailable": 1, "maxUnavailable": None}}}})  # HPA min 2
    assert one(ok, "PodDisruptionBudget", "vien-router")["spec"] == {
        "minAvailable": 1, "selector": one(ok, "PodDisruptionBudget", "vien-router")["spec"]["selector"]}


@pytest.mark.parametrize("variant", VARIANTS3)
def test_progress_deadline_is_above_the_start_up_budget(variant):
    for dep in find(_objs(variant), "Deployment"):
        c = pod_spec(dep)["containers"][0]
        sp = c.get("startupProbe")
        if not sp:
            continue
        budget = int(sp["periodSeconds"]) * int(sp["failureThreshold"])
        deadline = dep["spec"].get("progressDeadlineSeconds", 600)   # 600: the Kubernetes default
        assert deadline > budget, f"{dep['metadata']['name']}: progressDeadlineSeconds {deadline} <= {budget}"


@pytest.mark.parametrize("revision", ["main", "v1.0", "REPLACE_WITH_COMMIT_SHA", "abc1234",
                                      "0123456789ABCDEF0123456789ABCDEF01234567", "0" * 39, "0" * 41])
@pytest.mark.parametrize("where", ["vllm", "fetch"])
def test_a_revision_that_is_not_a_40_hex_sha_is_refused(where, revision):
    vals = values("gpu")
    if where == "vllm":
        vals["vllm"]["model"]["revision"] = revision
    else:
        vals["models"]["fetch"][0]["revision"] = revision
    with pytest.raises(helm.HelmError):
        render_mod.render(vals)


def test_the_gpu_example_does_not_install_until_its_revisions_are_pinned():
    with pytest.raises(helm.HelmError):
        render_mod.render(render_mod.load_values([render_mod.GPU_VALUES]))


def test_fetched_models_land_in_a_revision_keyed_directory_the_profiles_load():
    objs = rendered("gpu")
    fetch = values("gpu")["models"]["fetch"][0]
    init = next(c for c in pod_spec(vien_deployments(objs)["query-embedder"])["initContainers"]
                if c["name"] == "fetch-0")
    dest = env_of(init)["DEST"]["value"]
    assert dest.endswith(f"/{fetch['name']}/{fetch['revision']}")
    cfg = _profiles(objs)
    assert cfg.encoders[cfg.profiles[cfg.routing.default].query_encoder].model == dest


def _run_fetch_script(init: dict, hub_port: int, models: Path) -> subprocess.CompletedProcess:
    env = {e["name"]: e["value"] for e in init["env"] if "value" in e}
    env["DEST"] = env["DEST"].replace("/models", str(models), 1)
    env["HF_ENDPOINT"] = f"http://127.0.0.1:{hub_port}"
    env["HOME"] = str(models.parent / "home")
    env["PATH"] = "/usr/bin:/bin"
    return subprocess.Popen([sys.executable, *init["command"][1:]], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_the_rendered_fetch_is_atomic_and_keeps_revisions_apart(tmp_path):
    """The fetch init container's script (as rendered) against the hub stand-in (deploy/hubstub.py, fake:
    no hub here): three pods fetching at once into one shared directory all succeed, each file whole, with
    no partial directory left; a second revision lands next to the first, which stays untouched."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("hubstub", ROOT / "deploy" / "hubstub.py")
    assert spec and spec.loader
    hubstub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubstub)
    rev1, rev2 = "1" * 40, "2" * 40
    repo1, repo2 = tmp_path / "r1", tmp_path / "r2"
    for d, tag in ((repo1, b"one"), (repo2, b"two")):
        (d / "onnx").mkdir(parents=True)
        (d / "config.json").write_bytes(b'{"v": "%s"}' % tag)
        (d / "onnx" / "model.onnx").write_bytes(tag * 200_000)
    fetch = [{"name": "m", "repo": "org/m", "revision": rev1}]
    hub = hubstub.HubStub({("org/m", rev1): repo1, ("org/m", rev2): repo2}).start()
    try:
        models = tmp_path / "models"
        init = next(c for c in pod_spec(vien_deployments(render_objects({"models": {"fetch": fetch}}))
                                        ["query-embedder"])["initContainers"] if c["name"] == "fetch-0")
        procs = [_run_fetch_script(init, hub.port, models) for _ in range(3)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        dest = models / "m" / rev1
        assert (dest / "onnx" / "model.onnx").read_bytes() == b"one" * 200_000
        assert (dest / ".vien-revision").read_text() == rev1
        assert sorted(x.name for x in (models / "m").iterdir()) == [rev1]   # no .partial-* left behind
        n = len(hub.requests)
        p = _run_fetch_script(init, hub.port, models)
        assert p.communicate(timeout=60) and p.returncode == 0 and len(hub.requests) == n   # present: no download
        fetch2 = [{"name": "m", "repo": "org/m", "revision": rev2}]
        init2 = next(c for c in pod_spec(vien_deployments(render_objects({"models": {"fetch": fetch2}}))
                                         ["query-embedder"])["initContainers"] if c["name"] == "fetch-0")
        p = _run_fetch_script(init2, hub.port, models)
        assert p.communicate(timeout=60) and p.returncode == 0
        assert (models / "m" / rev2 / "onnx" / "model.onnx").read_bytes() == b"two" * 200_000
        assert (dest / "onnx" / "model.onnx").read_bytes() == b"one" * 200_000
    finally:
        hub.close()


def _template_annotations(objs, component: str) -> dict[str, str]:
    return vien_deployments(objs)[component]["spec"]["template"]["metadata"]["annotations"]


@pytest.mark.parametrize("change", ["vllm-revision", "vllm-model", "fetch-revision"])
def test_a_new_document_model_or_revision_rolls_the_doc_embedders(change):
    vals = values("gpu")
    if change == "vllm-revision":
        vals["vllm"]["model"]["revision"] = "f" * 40
    elif change == "vllm-model":
        vals["vllm"]["model"]["id"] = "Qwen/Qwen3-Embedding-4B"
    else:
        vals["models"]["fetch"][0]["revision"] = "e" * 40
    a, b = rendered("gpu"), render_objects(vals)
    assert _template_annotations(a, "doc-embedder") != _template_annotations(b, "doc-embedder")
    if change == "fetch-revision":   # the query side rolls too
        assert _template_annotations(a, "query-embedder") != _template_annotations(b, "query-embedder")
    if change == "vllm-revision":   # in no profile (the served name stays): only the model loaders roll
        assert _template_annotations(a, "router") == _template_annotations(b, "router")


def test_a_changed_secret_rolls_the_pods_that_read_it():
    a = render_objects({"secrets": {"values": {"vllmApiKey": "one"}}})
    b = render_objects({"secrets": {"values": {"vllmApiKey": "two"}}})
    for name in ("doc-embedder", "router", "gateway"):
        assert (_template_annotations(a, name)["checksum/secrets"]
                != _template_annotations(b, name)["checksum/secrets"])
    assert "one" not in json.dumps(_template_annotations(a, "doc-embedder"))
    own = render_objects({"secrets": {"existingSecret": "mine",
                                      "rolloutAnnotation": {"secret.reloader.stakater.com/reload": "mine"}}})
    ann = _template_annotations(own, "router")
    assert "checksum/secrets" not in ann and ann["secret.reloader.stakater.com/reload"] == "mine"


@pytest.mark.parametrize("variant", ["default", "gpu"])
def test_vllm_pod_meets_the_restricted_pod_security_standard(variant):
    vals = values(variant)
    vals["vllm"] = render_mod.deep_merge(vals.get("vllm", {}), {"enabled": True, "model": {"revision": "a" * 40}})
    spec = pod_spec(one(render_objects(vals), "Deployment", "vien-vllm"))
    pod_sec = spec["securityContext"]
    assert pod_sec["runAsNonRoot"] is True and pod_sec["runAsUser"] != 0
    assert pod_sec["seccompProfile"]["type"] == "RuntimeDefault"
    for c in spec["containers"]:
        sec = c["securityContext"]
        assert sec["allowPrivilegeEscalation"] is False and sec["capabilities"]["drop"] == ["ALL"]
        assert not sec.get("privileged") and not sec.get("capabilities", {}).get("add")
        assert "runAsUser" not in sec or sec["runAsUser"] != 0
    assert not [v for v in spec["volumes"] if "hostPath" in v]
    # the GPU request places the pod; no label from NVIDIA's feature discovery is assumed
    assert not any(k.startswith(("nvidia.com/gpu.", "feature.node.kubernetes.io"))
                   for k in spec.get("nodeSelector", {}))


# ---------- operator kit ----------

def _kit(variant: str = "gpu") -> list[dict]:
    return render_objects(render_mod.deep_merge(values(variant), render_mod.OPS_KIT))


def _metric_names() -> set[str]:
    from vien.runtime import metrics
    return {m._name + suffix for m in vars(metrics).values() if hasattr(m, "_name") and hasattr(m, "_type")
            for suffix in (("", "_total", "_count", "_bucket", "_sum") if m._type in ("counter", "histogram")
                           else ("",))}


VLLM_METRICS = {"vllm:num_requests_waiting", "vllm:num_requests_running"}


def _exprs_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\b(vien_[a-z_]+|vllm:[a-z_]+)\b", expr))


def test_operator_kit_is_off_by_default():
    objs = rendered("default")
    assert not find(objs, "PrometheusRule") and not find(objs, "ScaledObject")
    assert not find(objs, "ConfigMap", "vien-dashboard")


def test_grafana_dashboard_configmap_uses_the_sidecar_label_and_known_metrics():
    objs = _kit()
    cm = one(objs, "ConfigMap", "vien-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["vien.json"])
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = set().union(*map(_exprs_metrics, exprs))
    known = _metric_names() | VLLM_METRICS
    assert used and used <= known, used - known
    for must in ("vien_breaker_state", "vien_space_guard_ok", "vien_consumer_lag", "vien_dlq_events_total",
                 "vllm:num_requests_waiting"):
        assert must in used


def test_prometheus_rules_alert_on_the_operator_signals():
    objs = _kit()
    rules = {r["alert"]: r for g in one(objs, "PrometheusRule", "vien")["spec"]["groups"] for r in g["rules"]}
    assert set(rules) == {"VienBreakerOpen", "VienSpaceGuardFailed", "VienConsumerLagHigh", "VienDLQGrowing",
                          "VienVllmQueueHigh"}
    known = _metric_names() | VLLM_METRICS
    for name, r in rules.items():
        used = _exprs_metrics(r["expr"])
        assert used and used <= known, (name, used - known)
        assert 'namespace="vien"' in r["expr"] and r["labels"]["severity"] in ("warning", "critical")
        assert r["expr"].count("(") == r["expr"].count(")")
    assert "== 2" in rules["VienBreakerOpen"]["expr"]        # vien_breaker_state: 2 = open
    assert "== 0" in rules["VienSpaceGuardFailed"]["expr"]   # vien_space_guard_ok: 0 = failed


def test_keda_scales_ingest_on_lag_and_vllm_on_its_queue():
    objs = _kit()
    ing = one(objs, "ScaledObject", "vien-ingest")
    assert ing["spec"]["triggers"][0]["type"] == "kafka"
    vllm = one(objs, "ScaledObject", "vien-vllm")
    trig = vllm["spec"]["triggers"][0]
    assert trig["type"] == "prometheus" and "vllm:num_requests_waiting" in trig["metadata"]["query"]
    assert vllm["spec"]["scaleTargetRef"]["name"] == "vien-vllm"
    assert "replicas" not in one(objs, "Deployment", "vien-vllm")["spec"]   # KEDA owns them
    for kv in KUBE_VERSIONS:
        assert render_mod.validate(objs, kv) == []


# ---------- docs/deploy.md matches the templates ----------

def _doc_tables() -> tuple[list[list[str]], list[list[str]]]:
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    section = text.split("### Probes, ports and environment (as rendered)", 1)[1].split("\n### ", 1)[0]
    tables, cur = [], []
    for line in section.splitlines():
        if line.startswith("|"):
            cur.append([c.strip().strip("`") for c in line.strip().strip("|").split("|")])
        elif cur:
            tables.append(cur[2:])   # header and rule off
            cur = []
    if cur:
        tables.append(cur[2:])
    return tables[0], tables[1]


def _probe_kind(p: dict) -> str:
    if "grpc" in p:
        return " ".join(x for x in ("grpc", p["grpc"].get("service", "")) if x)
    if "httpGet" in p:
        return f"httpGet {p['httpGet']['path']}"
    return next(k for k in ("tcpSocket", "exec") if k in p)


SHARED_ENV = re.compile(r"^(VIEN_HOST|VIEN_CONFIG|VIEN_MODELS_DIR|HOME|VIEN_[A-Z_]+_ADDR|VIEN_METRICS_PORT|"
                        r"OTEL_EXPORTER_OTLP_ENDPOINT|OTEL_EXPORTER_OTLP_INSECURE|VIEN_LOG_LEVEL|"
                        r"VIEN_MAX_MESSAGE_BYTES|VIEN_MAX_CONNECTION_AGE_S|VIEN_MAX_CONNECTION_AGE_GRACE_S)$")


def test_documented_probes_ports_and_env_match_the_rendered_pods():
    probes, envs = _doc_tables()
    objs = rendered("default")
    pods = {name: pod_spec(dep)["containers"][0] for name, dep in vien_deployments(objs).items()}
    pods["vllm"] = pod_spec(one(rendered("gpu"), "Deployment", "vien-vllm"))["containers"][0]
    want = []
    for name, c in pods.items():
        ports = ", ".join(f"{p['containerPort']} {p['name']}" for p in c["ports"])
        want.append([name, ports, *(_probe_kind(c[k]) for k in ("startupProbe", "readinessProbe", "livenessProbe"))])
    assert sorted(probes) == sorted(want)
    documented = {row[0]: {e.strip().strip("`") for e in row[1].split(",")} for row in envs}
    rendered_env = {name: {n for n in env_of(c) if not SHARED_ENV.match(n)} for name, c in pods.items()
                    if name != "vllm"}
    assert documented == rendered_env
    text = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    for shared in ("VIEN_HOST", "VIEN_CONFIG", "VIEN_MODELS_DIR", "VIEN_METRICS_PORT", "OTEL_EXPORTER_OTLP_ENDPOINT",
                   "VIEN_MAX_CONNECTION_AGE_S", "VIEN_MAX_CONNECTION_AGE_GRACE_S"):
        assert all(shared in env_of(c) for n, c in pods.items() if n != "vllm") and f"`{shared}`" in text
