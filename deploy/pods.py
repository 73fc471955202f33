#!/usr/bin/env python3
"""Run the rendered pods of helm/vien as local processes: the part of the kubelet that decides whether a
`helm install` comes up, emulated on one machine (no cluster, no container engine here).

    python deploy/pods.py                               # deploy/values-local.yaml, until every pod is ready
    python deploy/pods.py -f deploy/values-local.yaml --documents --outage --report out.json

What it does, per Deployment/StatefulSet of the render (one pod per replica):
- containers: the init containers in order (each to exit 0), then the containers, each a local process
  with exactly the rendered env (plus the image's own PATH/PYTHONPATH/LANG, nothing from this shell), restarted
  on exit or on a failed liveness/startup probe with the kubelet's back-off (10 s doubling, capped by
  --max-backoff). valueFrom is resolved from the rendered objects: secretKeyRef/configMapKeyRef (the rendered
  Secret/ConfigMap; a missing required key keeps the pod in CreateContainerConfigError), fieldRef
  (metadata.name/namespace/labels, status.podIP = 127.0.0.1) and resourceFieldRef (ceil(quantity / divisor)).
- images: vien's own image runs `vien ...`/`python ...` as this interpreter (sys.executable) with the repo's
  services/ on PYTHONPATH; redis -> the local redis-server with the rendered args; apache/kafka -> tansu (the
  Kafka protocol; the rendered KAFKA_* env does not apply to it); vllm/vllm-openai -> vLLM's CPU build
  (VIEN_VLLM_PYTHON -m vllm.entrypoints.openai.api_server), its positional model id mapped to a local model
  directory and --revision dropped (the weights are not downloaded; the revision still reaches the pods'
  annotations). Any other image is refused by name.
- volumes: every volume becomes a local directory (emptyDir: per pod; PVC/volumeClaimTemplate: per claim,
  shared like a RWX claim; ConfigMap/Secret: their files). A container sees a volume only through its
  volumeMounts: every mountPath in its env values, args and mounted config files is rewritten to the local
  directory, so a path the pod does not mount stays a container path that does not exist here.
- network: the pod network is loopback. Every containerPort of every pod gets a free local port; an arg or
  env value that names a containerPort of its own pod (`--port 50053`, VIEN_METRICS_PORT=9464) is rewritten
  to it; `<service>[.<ns>[.svc[.cluster.local]]]:<port>` in env values, args and mounted config files is
  rewritten to 127.0.0.1:<the port of the pod behind that Service>, and so are the external endpoints given
  with --external (the hub stand-in).
- probes: startup, then readiness and liveness, as the kubelet runs them (periodSeconds, timeoutSeconds,
  failureThreshold, successThreshold): grpc (grpc.health.v1 Check of `service`), httpGet, tcpSocket, exec
  (run here with the pod's env; the redis image's `redis-cli` gets `-p <port>`).
- Helm hook Jobs: the Kafka topics Job (apache/kafka's CLI) is done by the harness with the Job's env
  (TOPIC/DLQ/PARTITIONS/DLQ_PARTITIONS) through aiokafka once the Kafka pod is ready.
- Qdrant: no Qdrant server installs here; the local values turn it off and enable the chart's store
  service (Qdrant Edge in one pod, VIEN_VECTOR_STORE=remote:...).
- Hugging Face hub: a local stand-in (deploy/hubstub.py, fake) serves the locally built model repos at the
  revisions the values pin, at the values' models.hubEndpoint.

It ends with one JSON line: pods_total, pods_ready, pods [{name, phase, restarts, ready}] (and the checks
run). --report writes more (per-pod events, resolved env, checks) for tests/test_pods.py.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import json
import math
import os
import re
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "services"))
import render  # noqa: E402  (deploy/render.py)
import yaml  # noqa: E402
from hubstub import HubStub  # noqa: E402

from vien.runtime import env  # noqa: E402

LOCAL_VALUES = HERE / "values-local.yaml"
# vLLM's CPU build in its own virtual environment (as `vien up --doc-backend vllm`): VIEN_VLLM_PYTHON, else
# <repo>/.venv-vllm/bin/python (`make .venv-vllm`)
VLLM_PYTHON = env.get("VIEN_VLLM_PYTHON") or ROOT / ".venv-vllm" / "bin" / "python"
MODELS_CACHE = env.get("VIEN_PODS_CACHE")
KUBELET_BACKOFF_S = 10.0
WORKLOADS = ("Deployment", "StatefulSet")


def log(msg: str) -> None:
    print(f"[pods {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pdeathsig() -> None:  # the child dies with the harness (SIGKILL of the harness leaves nothing behind)
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


_SUFFIX = {"m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(q: str | int | float) -> float:
    """A Kubernetes resource quantity as a number ("500m" -> 0.5, "2Gi" -> 2147483648)."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(q).strip())
    if not m or m.group(2) not in _SUFFIX:
        raise ValueError(f"not a resource quantity: {q!r}")
    return float(m.group(1)) * _SUFFIX[m.group(2)]


# ---------------------------------------------------------------- models for the local values

def local_models() -> dict[str, Path]:
    """The small Qwen3 (HF format, for vLLM) and its ONNX export (for the query side), built once."""
    out = MODELS_CACHE / "tiny-qwen3-seed0"
    hf, onnx = out / "hf", out / "onnx"
    if not (onnx / "vien_model.json").is_file():
        import subprocess
        tmp = out.with_name(out.name + f".partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "services")}
        log(f"building the small Qwen3 and its ONNX export into {out} (once)")
        subprocess.run([sys.executable, "-m", "vien_tools.build.tiny_qwen3", "--out", str(tmp / "hf")], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, "-m", "vien_tools", "export-onnx", str(tmp / "hf"), "--out", str(tmp / "onnx")],
                       env=env, check=True, stdout=subprocess.DEVNULL)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(out, ignore_errors=True)
        os.rename(tmp, out)
    return {"hf": hf, "onnx": onnx}


# ---------------------------------------------------------------- the pods

@dataclass
class Container:
    spec: dict[str, Any]
    init: bool
    restarts: int = 0
    started: bool = False
    ready: bool = False
    state: str = "Waiting"          # Waiting / Running / Terminated / CrashLoopBackOff / CreateContainerConfigError
    proc: asyncio.subprocess.Process | None = None
    env: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.spec["name"])


@dataclass
class Pod:
    name: str
    workload: dict[str, Any]
    dir: Path
    ports: dict[int, int] = field(default_factory=dict)      # containerPort -> local port
    port_names: dict[str, int] = field(default_factory=dict)  # port name -> containerPort
    volumes: dict[str, Path] = field(default_factory=dict)
    inits: list[Container] = field(default_factory=list)
    containers: list[Container] = field(default_factory=list)
    phase: str = "Pending"
    events: list[tuple[float, str]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @property
    def spec(self) -> dict[str, Any]:
        return self.workload["spec"]["template"]["spec"]

    @property
    def labels(self) -> dict[str, str]:
        return self.workload["spec"]["template"]["metadata"].get("labels", {})

    @property
    def component(self) -> str:
        return self.labels.get("app.kubernetes.io/component", self.name)

    @property
    def ready(self) -> bool:
        return self.phase == "Running" and all(c.ready for c in self.containers)

    @property
    def restarts(self) -> int:
        return sum(c.restarts for c in self.containers)

    def event(self, t0: float, what: str) -> None:
        self.events.append((round(time.monotonic() - t0, 2), what))
        log(f"{self.name}: {what}")


class Harness:
    def __init__(self, objs: list[dict[str, Any]], workdir: Path, namespace: str, models: dict[str, Path],
                 external: dict[str, int], max_backoff: float = 40.0) -> None:
        self.objs = objs
        self.workdir = workdir
        self.namespace = namespace
        self.models = models
        self.max_backoff = max_backoff
        self.t0 = time.monotonic()
        self.stopping = False
        self.pods: list[Pod] = []
        self.secrets = {o["metadata"]["name"]: self._secret_data(o) for o in objs if o["kind"] == "Secret"}
        self.configmaps = {o["metadata"]["name"]: dict(o.get("data", {})) for o in objs if o["kind"] == "ConfigMap"}
        for o in objs:
            if o["kind"] not in WORKLOADS:
                continue
            for i in range(int(o["spec"].get("replicas", 1))):
                name = f"{o['metadata']['name']}-{i}"
                pod = Pod(name, o, workdir / "pods" / name)
                for c in pod.spec.get("initContainers", []):
                    pod.inits.append(Container(c, init=True))
                for c in pod.spec["containers"]:
                    pod.containers.append(Container(c, init=False))
                    for p in c.get("ports", []):
                        pod.ports[int(p["containerPort"])] = free_port()
                        if p.get("name"):
                            pod.port_names[p["name"]] = int(p["containerPort"])
                self._volumes(pod, i)
                self.pods.append(pod)
        # host:port -> local port, for Services (to their first pod) and the external endpoints given
        self.addresses: dict[tuple[str, int], int] = {}
        for svc in (o for o in objs if o["kind"] == "Service"):
            sel = svc["spec"].get("selector") or {}
            backends = [p for p in self.pods if sel and sel.items() <= p.labels.items()]
            if not backends:
                continue
            pod = backends[0]
            for sp in svc["spec"]["ports"]:
                target = sp.get("targetPort", sp["port"])
                cport = pod.port_names.get(target) if isinstance(target, str) else int(target)
                if cport in pod.ports:
                    self.addresses[(svc["metadata"]["name"], int(sp["port"]))] = pod.ports[cport]
        for hostport, local in external.items():
            host, _, port = hostport.rpartition(":")
            self.addresses[(host, int(port))] = local

    # ------------------------------------------------------------ objects

    @staticmethod
    def _secret_data(o: dict[str, Any]) -> dict[str, str]:
        data = {k: base64.b64decode(v).decode() for k, v in (o.get("data") or {}).items()}
        data.update(o.get("stringData") or {})
        return data

    def _volumes(self, pod: Pod, ordinal: int) -> None:
        claims = {t["metadata"]["name"] for t in pod.workload["spec"].get("volumeClaimTemplates", [])}
        for v in pod.spec.get("volumes", []):
            if "persistentVolumeClaim" in v:
                path = self.workdir / "pvc" / v["persistentVolumeClaim"]["claimName"]
            else:
                path = pod.dir / "volumes" / v["name"]
            pod.volumes[v["name"]] = path
        for name in claims:   # StatefulSet: <template>-<sts>-<ordinal>
            pod.volumes[name] = self.workdir / "pvc" / f"{name}-{pod.workload['metadata']['name']}-{ordinal}"

    def _fill_volumes(self, pod: Pod, c: Container) -> None:
        """ConfigMap/Secret volumes get their files, rewritten for this container (hosts, its mounts)."""
        for v in pod.spec.get("volumes", []):
            path = pod.volumes[v["name"]]
            path.mkdir(parents=True, exist_ok=True)
            src = None
            if "configMap" in v:
                src = self.configmaps.get(v["configMap"]["name"], {})
            elif "secret" in v:
                src = self.secrets.get(v["secret"]["secretName"], {})
            for key, text in (src or {}).items():
                (path / key).write_text(self.rewrite(str(text), pod, c), encoding="utf-8")

    def mounts(self, pod: Pod, c: Container) -> list[tuple[str, Path]]:
        out = [(m["mountPath"].rstrip("/") or "/", pod.volumes[m["name"]]) for m in c.spec.get("volumeMounts", [])]
        return sorted(out, key=lambda m: -len(m[0]))   # longest mount first

    # ------------------------------------------------------------ rewriting (pod network, volumes)

    def rewrite(self, text: str, pod: Pod, c: Container) -> str:
        for (host, port), local in self.addresses.items():
            pat = (rf"(?<![\w.-]){re.escape(host)}(?:\.{re.escape(self.namespace)}(?:\.svc(?:\.cluster\.local)?)?)?"
                   rf":{port}(?!\d)")
            text = re.sub(pat, f"127.0.0.1:{local}", text)
        mounts = dict(self.mounts(pod, c))
        if mounts:   # one pass (longest mount first), so a replaced path is not rewritten again
            alt = "|".join(re.escape(m) for m in mounts)
            text = re.sub(rf"(?<![\w.~-])({alt})(?=/|$|[\s\"',;:}}\]])", lambda m: str(mounts[m.group(1)]), text)
        return text

    def own_port(self, value: str, pod: Pod) -> str:
        return str(pod.ports[int(value)]) if value.isdigit() and int(value) in pod.ports else value

    def resolve_env(self, pod: Pod, c: Container) -> dict[str, str] | str:
        """The container's env as the kubelet builds it; a str is the reason it cannot start."""
        env: dict[str, str] = {}
        for e in c.spec.get("env", []):
            name = e["name"]
            if "value" in e:
                value = str(e["value"])
            elif "valueFrom" in e:
                vf = e["valueFrom"]
                if "secretKeyRef" in vf or "configMapKeyRef" in vf:
                    ref = vf.get("secretKeyRef") or vf["configMapKeyRef"]
                    store = self.secrets if "secretKeyRef" in vf else self.configmaps
                    found = store.get(ref["name"], {}).get(ref["key"])
                    if found is None:
                        if ref.get("optional"):
                            continue
                        return f"{name}: key {ref['key']!r} not in {ref['name']!r}"
                    value = str(found)
                elif "fieldRef" in vf:
                    path = vf["fieldRef"]["fieldPath"]
                    m = re.fullmatch(r"metadata\.labels\['(.+)'\]", path)
                    value = {"metadata.name": pod.name, "metadata.namespace": self.namespace,
                             "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1",
                             "spec.nodeName": socket.gethostname(),
                             "spec.serviceAccountName": str(pod.spec.get("serviceAccountName", "default"))
                             }.get(path) or (pod.labels.get(m.group(1), "") if m else "")
                elif "resourceFieldRef" in vf:
                    rf = vf["resourceFieldRef"]
                    kind, _, res = rf["resource"].partition(".")
                    q = (c.spec.get("resources", {}).get(kind) or {}).get(res)
                    if q is None:   # unset: the kubelet gives the node's allocatable (here: this machine)
                        q = str(os.cpu_count() or 1) if res == "cpu" else str(os.sysconf("SC_PHYS_PAGES")
                                                                              * os.sysconf("SC_PAGE_SIZE"))
                    value = str(math.ceil(quantity(q) / quantity(rf.get("divisor", "1"))))
                else:
                    return f"{name}: unsupported valueFrom {sorted(vf)}"
            else:
                value = ""
            env[name] = self.own_port(self.rewrite(value, pod, c), pod)
        return env

    def image_argv(self, pod: Pod, c: Container, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """What the image runs, as a local command, and the image's own env (PATH & co.)."""
        image = str(c.spec["image"])
        repo = image.split("@")[0].rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image.split("@")[0]
        argv = [*c.spec.get("command", []), *c.spec.get("args", [])]
        argv = [self.own_port(self.rewrite(str(a), pod, c), pod) for a in argv]
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        if repo.endswith("vllm/vllm-openai"):
            if argv[:2] != ["vllm", "serve"]:
                raise ValueError(f"{pod.name}/{c.name}: expected `vllm serve MODEL ...`, got {argv[:3]}")
            rest = argv[3:]
            if "--revision" in rest:   # the local model directory has no revisions (see the module doc)
                i = rest.index("--revision")
                del rest[i:i + 2]
            return [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model",
                    str(self.models["hf"]), *rest], base
        if repo.rsplit("/", 1)[-1] == "redis" and argv and argv[0] == "redis-server":
            return [shutil.which("redis-server") or "redis-server", *argv[1:]], base
        if repo.endswith("apache/kafka"):
            from vien_tools.cli.tansu import find_tansu
            port = pod.ports[pod.port_names.get("kafka", 9092)]
            url = f"tcp://127.0.0.1:{port}"
            return [str(find_tansu()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                    "--storage-engine", "memory://tansu/", "--cluster-id", f"vien-pods-{pod.name}"], \
                {**base, "RUST_LOG": "warn"}
        if argv and argv[0] in ("vien", "python", "python3"):   # vien's own image
            base["PYTHONPATH"] = str(ROOT / "services")
            head = [sys.executable, "-m", "vien_tools"] if argv[0] == "vien" else [sys.executable]
            return [*head, *argv[1:]], base
        raise ValueError(f"{pod.name}/{c.name}: no local stand-in for image {image!r} running {argv[:2]}")

    # ------------------------------------------------------------ processes

    async def spawn(self, pod: Pod, c: Container) -> bool:
        env = self.resolve_env(pod, c)
        if isinstance(env, str):
            c.state = "CreateContainerConfigError"
            pod.event(self.t0, f"{c.name}: CreateContainerConfigError ({env})")
            return False
        self._fill_volumes(pod, c)
        for _, local in self.mounts(pod, c):
            local.mkdir(parents=True, exist_ok=True)
        argv, base = self.image_argv(pod, c, env)
        c.env, c.argv = env, argv
        logf = pod.dir / f"{c.name}.log"
        logf.parent.mkdir(parents=True, exist_ok=True)
        with open(logf, "ab") as out:
            out.write(f"\n===== start {time.strftime('%H:%M:%S')} (restarts {c.restarts}): {argv}\n".encode())
            c.proc = await asyncio.create_subprocess_exec(
                *argv, env={**base, **env}, cwd=str(pod.dir), stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True, preexec_fn=_pdeathsig)
        c.state = "Running"
        return True

    async def kill(self, c: Container, grace: float) -> None:
        proc = c.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        with contextlib.suppress(ProcessLookupError):   # workers left in the group (vLLM's engine core)
            os.killpg(proc.pid, signal.SIGKILL)

    def backoff(self, n: int) -> float:
        return min(self.max_backoff, KUBELET_BACKOFF_S * 2 ** max(0, n - 1))

    # ------------------------------------------------------------ probes

    async def probe(self, pod: Pod, c: Container, p: dict[str, Any]) -> bool:
        timeout = float(p.get("timeoutSeconds", 1))

        def port_of(ref: Any) -> int:
            cport = pod.port_names[ref] if isinstance(ref, str) else int(ref)
            return pod.ports.get(cport, cport)

        try:
            if "grpc" in p:
                import grpc
                from grpc_health.v1 import health_pb2, health_pb2_grpc
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port_of(p['grpc']['port'])}") as ch:
                    r = await health_pb2_grpc.HealthStub(ch).Check(
                        health_pb2.HealthCheckRequest(service=p["grpc"].get("service", "")), timeout=timeout)
                return bool(r.status == health_pb2.HealthCheckResponse.SERVING)
            if "httpGet" in p:
                g = p["httpGet"]
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port_of(g["port"])), timeout)
                try:
                    writer.write(f"GET {g.get('path', '/')} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: kube-probe/1.34"
                                 f"\r\nConnection: close\r\n\r\n".encode())
                    await writer.drain()
                    line = await asyncio.wait_for(reader.readline(), timeout)
                finally:
                    writer.close()
                parts = line.split()
                return len(parts) >= 2 and 200 <= int(parts[1]) < 400
            if "tcpSocket" in p:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port_of(p["tcpSocket"]["port"])), timeout)
                writer.close()
                return True
            if "exec" in p:
                cmd = [str(a) for a in p["exec"]["command"]]
                if cmd[:1] == ["redis-cli"]:   # the redis image's CLI talks to the pod's own port 6379
                    cmd = [shutil.which("redis-cli") or "redis-cli", "-p", str(port_of(6379)), *cmd[1:]]
                proc = await asyncio.create_subprocess_exec(
                    *cmd, env={"PATH": os.environ.get("PATH", ""), **c.env}, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL)
                try:
                    return await asyncio.wait_for(proc.wait(), timeout) == 0
                except TimeoutError:
                    proc.kill()
                    return False
        except Exception:   # refused, timed out, reset: a failed probe
            return False
        raise ValueError(f"{pod.name}/{c.name}: unsupported probe {sorted(p)}")

    async def probes(self, pod: Pod, c: Container) -> str:
        """Run the probes until one says restart; returns why."""
        sp, rp, lp = (c.spec.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe"))
        if sp:
            await asyncio.sleep(float(sp.get("initialDelaySeconds", 0)))
            fails = 0
            while not await self.probe(pod, c, sp):
                fails += 1
                if fails >= int(sp.get("failureThreshold", 3)):
                    return "startup probe failed"
                await asyncio.sleep(float(sp.get("periodSeconds", 10)))
        c.started = True
        pod.event(self.t0, f"{c.name}: started")

        async def readiness() -> None:
            if not rp:
                c.ready = True
                pod.event(self.t0, f"{c.name}: ready")
                return
            await asyncio.sleep(float(rp.get("initialDelaySeconds", 0)))
            ok = fails = 0
            while True:
                if await self.probe(pod, c, rp):
                    ok, fails = ok + 1, 0
                    if not c.ready and ok >= int(rp.get("successThreshold", 1)):
                        c.ready = True
                        pod.event(self.t0, f"{c.name}: ready")
                else:
                    ok, fails = 0, fails + 1
                    if c.ready and fails >= int(rp.get("failureThreshold", 3)):
                        c.ready = False
                        pod.event(self.t0, f"{c.name}: not ready")
                await asyncio.sleep(float(rp.get("periodSeconds", 10)))

        async def liveness() -> str:
            if not lp:
                await asyncio.Event().wait()
            await asyncio.sleep(float(lp.get("initialDelaySeconds", 0)))
            fails = 0
            while True:
                await asyncio.sleep(float(lp.get("periodSeconds", 10)))
                if await self.probe(pod, c, lp):
                    fails = 0
                else:
                    fails += 1
                    if fails >= int(lp.get("failureThreshold", 3)):
                        return "liveness probe failed"

        r = asyncio.create_task(readiness())
        try:
            return await liveness()
        finally:
            r.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await r

    # ------------------------------------------------------------ the pod's life

    async def run_init(self, pod: Pod, c: Container, idx: int) -> None:
        while not self.stopping:
            pod.phase = f"Init:{idx}/{len(pod.inits)}"
            if not await self.spawn(pod, c):
                await asyncio.sleep(5)
                continue
            assert c.proc is not None
            rc = await c.proc.wait()
            if rc == 0:
                c.state = "Terminated"
                pod.event(self.t0, f"init {c.name}: completed")
                return
            c.restarts += 1
            pod.phase = "Init:CrashLoopBackOff"
            pod.event(self.t0, f"init {c.name}: exited {rc} (restart {c.restarts})")
            await asyncio.sleep(self.backoff(c.restarts))

    async def run_container(self, pod: Pod, c: Container) -> None:
        grace = float(pod.spec.get("terminationGracePeriodSeconds", 30))
        while not self.stopping:
            c.started = c.ready = False
            if not await self.spawn(pod, c):
                await asyncio.sleep(5)
                continue
            assert c.proc is not None
            wait = asyncio.create_task(c.proc.wait())
            probes = asyncio.create_task(self.probes(pod, c))
            done, _ = await asyncio.wait({wait, probes}, return_when=asyncio.FIRST_COMPLETED)
            c.ready = c.started = False
            if probes in done:
                reason = probes.result()
                await self.kill(c, grace)
            else:
                probes.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await probes
                reason = f"exited {wait.result()}"
            if self.stopping:
                break
            c.restarts += 1
            c.state = "CrashLoopBackOff"
            pod.event(self.t0, f"{c.name}: {reason} (restart {c.restarts})")
            await asyncio.sleep(self.backoff(c.restarts))

    async def run_pod(self, pod: Pod) -> None:
        pod.dir.mkdir(parents=True, exist_ok=True)
        for i, c in enumerate(pod.inits):
            await self.run_init(pod, c, i)
        pod.phase = "Running"
        await asyncio.gather(*(self.run_container(pod, c) for c in pod.containers))

    async def run_hook_jobs(self) -> None:
        """The Kafka topics hook Job, done here with its env (the apache/kafka CLI is not installed)."""
        from vien.kafka.topics import ensure_topics
        for job in (o for o in self.objs if o["kind"] == "Job"):
            c = job["spec"]["template"]["spec"]["containers"][0]
            env = {e["name"]: str(e.get("value", "")) for e in c.get("env", [])}
            if not {"BOOTSTRAP", "TOPIC", "PARTITIONS"} <= env.keys():
                raise ValueError(f"Job {job['metadata']['name']}: no local stand-in")
            host, _, port = env["BOOTSTRAP"].rpartition(":")
            local = self.addresses[(host.split(".")[0], int(port))]
            topics = {env["TOPIC"]: int(env["PARTITIONS"]), env["DLQ"]: int(env.get("DLQ_PARTITIONS", "1"))}
            while not self.stopping:
                try:
                    await ensure_topics(f"127.0.0.1:{local}", topics)
                    log(f"job {job['metadata']['name']}: topics {topics}")
                    break
                except Exception as exc:   # the broker is not up yet: the Job's pod is retried
                    log(f"job {job['metadata']['name']}: {type(exc).__name__}, retrying")
                    await asyncio.sleep(3)

    def start(self) -> None:
        for pod in self.pods:
            pod.task = asyncio.create_task(self.run_pod(pod), name=pod.name)

    async def stop(self) -> None:
        self.stopping = True
        for pod in self.pods:
            if pod.task:
                pod.task.cancel()
        await asyncio.gather(*(self.kill(c, 10) for p in self.pods for c in [*p.inits, *p.containers]),
                             return_exceptions=True)
        for pod in self.pods:
            if pod.task:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pod.task

    # ------------------------------------------------------------ queries

    def pod(self, component: str) -> Pod:
        return next(p for p in self.pods if p.component == component)

    def service_addr(self, component: str, port_name: str = "grpc") -> str:
        pod = self.pod(component)
        return f"127.0.0.1:{pod.ports[pod.port_names[port_name]]}"

    async def wait(self, pred: Any, timeout: float, what: str) -> float:
        t = time.monotonic()
        while not pred():
            if time.monotonic() - t > timeout:
                raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
            await asyncio.sleep(0.5)
        return time.monotonic() - t

    def summary(self) -> dict[str, Any]:
        return {"pods_total": len(self.pods), "pods_ready": sum(p.ready for p in self.pods),
                "pods": [{"name": p.name, "phase": p.phase, "restarts": p.restarts, "ready": p.ready}
                         for p in self.pods]}

    def report(self) -> dict[str, Any]:
        return {**self.summary(), "detail": {
            p.name: {"component": p.component, "events": p.events,
                     "containers": {c.name: {"env": c.env, "argv": c.argv, "restarts": c.restarts,
                                             "state": c.state} for c in [*p.inits, *p.containers]}}
            for p in self.pods}}


# ---------------------------------------------------------------- scenarios

async def documents_searchable(h: Harness, timeout: float) -> dict[str, Any]:
    """Publish the sample documents to the rendered topic; search them through the search pod."""
    import grpc

    from vien.v1 import search_pb2, search_pb2_grpc
    from vien_tools.cli.documents import publish
    ingest = h.pod("ingest").containers[0].env
    bootstrap, topic = ingest["VIEN_KAFKA_BOOTSTRAP"], ingest["VIEN_DOCUMENTS_TOPIC"]
    samples = ROOT / "services" / "vien" / "samples" / "documents.jsonl"
    summary = await publish(samples, bootstrap, topic, False)
    log(f"published {summary['published']} sample documents to {topic} at {bootstrap}")
    query, want = "Cách nấu phở bò Hà Nội", "vi-pho"
    t = time.monotonic()
    async with grpc.aio.insecure_channel(h.service_addr("search")) as ch:
        stub = search_pb2_grpc.SearchStub(ch)
        while True:
            try:
                r = await stub.Search(search_pb2.SearchRequest(query=query, tenant="demo", top_k=3), timeout=10)
                hits = [x.doc_id for x in r.hits]
                if want in hits:
                    return {"published": summary["published"], "query": query, "hits": hits, "profile": r.profile,
                            "seconds": round(time.monotonic() - t, 1)}
            except grpc.aio.AioRpcError as exc:
                hits = [exc.code().name]
            if time.monotonic() - t > timeout:
                raise TimeoutError(f"{want!r} not found by search within {timeout:.0f}s (last: {hits})")
            await asyncio.sleep(1)


async def vllm_outage(h: Harness, timeout: float) -> dict[str, Any]:
    """SIGKILL vLLM (the kubelet restarts it, which takes its start-up time); send documents to the
    doc-embedder meanwhile: it must go not-ready without a restart, and ready again once vLLM is back."""
    import grpc

    from vien.v1 import embedder_pb2, embedder_pb2_grpc
    vllm, doc = h.pod("vllm"), h.pod("doc-embedder")
    cm = next(data for name, data in h.configmaps.items() if name.endswith("-profiles"))
    profile = yaml.safe_load(cm["profiles.yaml"])["routing"]["default"]
    before = doc.restarts
    c = vllm.containers[0]
    assert c.proc is not None
    log("killing vLLM (SIGKILL)")
    os.killpg(c.proc.pid, signal.SIGKILL)
    t = time.monotonic()
    stop = asyncio.Event()

    async def traffic() -> None:   # what ingest would send; fails fast once the breaker is open
        async with grpc.aio.insecure_channel(h.service_addr("doc-embedder")) as ch:
            stub = embedder_pb2_grpc.DocEmbedderStub(ch)
            while not stop.is_set():
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stub.Encode(embedder_pb2.EncodeRequest(texts=["phở bò"], profile=profile), timeout=10)
                await asyncio.sleep(1)

    tr = asyncio.create_task(traffic())
    try:
        not_ready_after = await h.wait(lambda: not doc.ready, timeout, "the doc-embedder to go not-ready")
        await h.wait(lambda: vllm.ready, timeout, "vLLM to be ready again")
        back = await h.wait(lambda: doc.ready, timeout, "the doc-embedder to be ready again")
    finally:
        stop.set()
        await tr
    return {"doc_embedder_not_ready_after_s": round(not_ready_after, 1),
            "outage_s": round(time.monotonic() - t, 1), "ready_again_after_vllm_s": round(back, 1),
            "doc_embedder_restarts": doc.restarts - before, "vllm_restarts": vllm.restarts}


async def main_async(ns: argparse.Namespace) -> int:
    values = render.load_values(ns.values, ns.set)
    objs = render.objects(render.render(values, namespace=ns.namespace))
    merged = render.deep_merge(yaml.safe_load((render.CHART / "values.yaml").read_text(encoding="utf-8")), values)
    models = local_models()
    hub_repos: dict[tuple[str, str], Path] = {}
    for m in merged["models"].get("fetch") or []:   # the local hub publishes the ONNX export at the pinned sha
        hub_repos[(m["repo"], str(m["revision"]))] = models["onnx"]
    hub = HubStub(hub_repos).start()
    external = {}
    if merged["models"].get("hubEndpoint"):
        u = urlsplit(merged["models"]["hubEndpoint"])
        external[f"{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}"] = hub.port
    workdir = Path(ns.workdir) if ns.workdir else Path(os.environ.get("TMPDIR", "/tmp")) / f"vien-pods-{os.getpid()}"
    if workdir.exists() and not ns.workdir:
        shutil.rmtree(workdir)
    h = Harness(objs, workdir, ns.namespace, models, external, max_backoff=ns.max_backoff)
    log(f"{len(h.pods)} pods in {workdir}: " + ", ".join(p.name for p in h.pods))
    checks: dict[str, Any] = {}
    rc = 1
    h.start()
    jobs = asyncio.create_task(h.run_hook_jobs())
    try:
        checks["all_ready_s"] = round(await h.wait(lambda: all(p.ready for p in h.pods), ns.ready_timeout,
                                                   "every pod to be ready"), 1)
        await jobs
        if ns.documents:
            checks["documents"] = await documents_searchable(h, ns.ready_timeout)
        if ns.outage:
            checks["vllm_outage"] = await vllm_outage(h, ns.ready_timeout)
        rc = 0
    except (TimeoutError, AssertionError) as exc:
        checks["error"] = str(exc)
        log(f"FAILED: {exc}")
    finally:
        out = {**h.summary(), "checks": checks}
        report = {**h.report(), "checks": checks}
        jobs.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await jobs
        await h.stop()
        hub.close()
        if ns.report:
            Path(ns.report).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
        if not ns.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        print(json.dumps(out, ensure_ascii=False), flush=True)
    return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-f", "--values", action="append", default=[], help="values file (default: values-local.yaml)")
    ap.add_argument("--set", action="append", default=[], help="helm --set expression (repeatable)")
    ap.add_argument("--namespace", default=render.NAMESPACE)
    ap.add_argument("--documents", action="store_true", help="publish the samples; search them through the search pod")
    ap.add_argument("--outage", action="store_true", help="kill vLLM; the doc-embedder must go not-ready, not restart")
    ap.add_argument("--ready-timeout", type=float, default=900.0, help="seconds for each wait (default 900)")
    ap.add_argument("--max-backoff", type=float, default=40.0,
                    help="cap of the restart back-off, seconds (the kubelet's is 300)")
    ap.add_argument("--workdir", help="pod directories (default: a fresh one under $TMPDIR, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the pod directories and logs")
    ap.add_argument("--report", help="write the detailed report (events, env, checks) as JSON here")
    ns = ap.parse_args(argv)
    if not ns.values:
        ns.values = [str(LOCAL_VALUES)]
    return asyncio.run(main_async(ns))


if __name__ == "__main__":
    sys.exit(main())
