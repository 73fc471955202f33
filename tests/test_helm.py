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
from vien.runtime.registry import SERVICES

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
            assert c[probe].get("grpc", {}).get("service", "") == ""   # overall health of the server
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
    assert spec["nodeSelector"] == vals["nodeSelector"]
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
