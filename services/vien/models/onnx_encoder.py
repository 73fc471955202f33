"""A text encoder running an ONNX embedding model with onnxruntime (CPU; CUDA when asked and available).

Sources:
- a directory built by vien (``vien_model.json`` names the files, the pooling and the limits);
- a plain Hugging Face style directory with ``model.onnx`` (or ``onnx/model.onnx``) and ``tokenizer.json``;
  if the graph outputs per-token states (``last_hidden_state``), pooling and L2 normalisation run here;
- a Hugging Face repo id, fetched with ``huggingface_hub.snapshot_download`` (optional dependency).

Texts are NFC-normalised and stripped before tokenising. Prefixes/instructions are the caller's job.

Execution provider: ``VIEN_ONNX_PROVIDER`` = ``cpu`` (default) | ``cuda`` | ``auto`` (CUDA when onnxruntime has
it, else CPU). CUDA needs onnxruntime-gpu (``pip install 'vien[gpu]'``, in place of onnxruntime) and a GPU; when
either is missing the encoder falls back to CPU. One log line per model says which provider runs and why.
"""

from __future__ import annotations

import json
import logging
import os
import unicodedata
from pathlib import Path

import numpy as np

from vien.runtime import env

META_FILE = "vien_model.json"
VARIANTS = ("fp32", "int8", "fp16")
# Variants whose graphs quantize activations dynamically: one scale per tensor, computed over the whole batch
# (padding included), so a text's vector would move with its batch neighbours. These run one text at a
# time, unpadded: the vector of a text is then a function of the text alone (cache-stable), and on this
# CPU one-at-a-time int8 costs per text what fp32 costs in a batch of 32 (bench/RESULTS.md).
PER_TEXT_VARIANTS = frozenset({"int8"})
# candidate file names per variant for plain (non-vien) directories
_PLAIN_FILES = {
    "fp32": ("model.onnx", "onnx/model.onnx"),
    "int8": ("model_int8.onnx", "model_quantized.onnx", "onnx/model_int8.onnx", "onnx/model_quantized.onnx",
             "onnx/model_qint8_avx512_vnni.onnx", "onnx/model_qint8_avx2.onnx"),
    "fp16": ("model_fp16.onnx", "onnx/model_fp16.onnx"),
}
_EMBEDDING_OUTPUTS = ("embedding", "sentence_embedding", "embeddings")
_HIDDEN_OUTPUTS = ("last_hidden_state", "token_embeddings")


log = logging.getLogger("vien.models")
PROVIDER_ENV = "VIEN_ONNX_PROVIDER"
PROVIDER_CHOICES = ("cpu", "cuda", "auto")
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


class ModelLoadError(RuntimeError):
    """The model source cannot be loaded; the message names the path or repo and what is missing."""


def provider_setting(value: str | None = None) -> str:
    """The requested provider: ``value`` or VIEN_ONNX_PROVIDER (cpu | cuda | auto), default cpu."""
    if value is None:
        return str(env.get(PROVIDER_ENV))  # declared (vien.runtime.env): checked there
    raw = value.strip().lower() or "cpu"
    if raw not in PROVIDER_CHOICES:
        raise ValueError(f"{PROVIDER_ENV}={raw!r}: expected one of {', '.join(PROVIDER_CHOICES)}")
    return raw


def providers_for(setting: str, available: list[str]) -> tuple[list[str], str]:
    """(onnxruntime providers to ask for, why) for a setting and what this onnxruntime build offers."""
    if setting == "cpu":
        return [CPU], f"{PROVIDER_ENV}=cpu"
    if CUDA in available:
        return [CUDA, CPU], f"{PROVIDER_ENV}={setting}"
    return [CPU], (f"{PROVIDER_ENV}={setting} but this onnxruntime has no {CUDA} (install onnxruntime-gpu: "
                   f"pip install 'vien[gpu]'); falling back to CPU")


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads not counted; affinity respected)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - non-Linux
        allowed = set(range(os.cpu_count() or 1))
    cores: set[tuple[str, str]] = set()
    try:
        proc = phys = core = None
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "processor":
                    proc, phys, core = int(val), "0", None
                elif key == "physical id":
                    phys = val
                elif key == "core id":
                    core = val
                elif not key and proc is not None:
                    if proc in allowed:
                        cores.add((phys or "0", core if core is not None else str(proc)))
                    proc = None
        if proc is not None and proc in allowed:
            cores.add((phys or "0", core if core is not None else str(proc)))
    except OSError:
        pass
    return max(1, min(len(allowed), len(cores) if cores else len(allowed)))


def default_threads() -> int:
    """Intra-op threads when the encoder config names none: VIEN_ORT_THREADS (in Kubernetes, the container's
    CPU request through the downward API; 0 or unset = no request) capped at the cores this process may use,
    else those cores."""
    cores = physical_cores()
    n = int(env.get("VIEN_ORT_THREADS") or 0)
    return min(n, cores) if n else cores


def _is_local(source: str | Path) -> bool:
    return (isinstance(source, Path) or Path(os.path.expanduser(source)).exists()
            or str(source).startswith(("/", "./", "../", "~")))


def _resolve_source(source: str | Path) -> Path:
    p = Path(os.path.expanduser(str(source)))
    if _is_local(source):
        if not p.is_dir():
            raise ModelLoadError(f"model directory {p} does not exist (or is not a directory)")
        return p
    # a hub repo id
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelLoadError(f"{source!r} is not a local directory, and loading it from the Hugging Face hub "
                             "needs huggingface_hub (pip install huggingface_hub)") from exc
    try:
        return Path(snapshot_download(str(source), allow_patterns=["*.json", "*.onnx", "onnx/*", "*.txt",
                                                                   "*.model"]))
    except Exception as exc:
        raise ModelLoadError(f"cannot fetch model {source!r} from the Hugging Face hub: {exc}") from exc


class OnnxEncoder:
    """Tokenizer + onnxruntime session for one embedding model (one variant)."""

    def __init__(self, *, directory: Path, model_path: Path, tokenizer, session, model_id: str, revision: str,
                 dims: int, max_tokens: int, variant: str, pooling: str, normalized: bool, pad_id: int,
                 output_name: str, pooled_in_graph: bool, extra_inputs: dict[str, str]) -> None:
        self.directory = directory
        self.model_path = model_path
        self.model_id = model_id
        self.revision = revision
        self.dims = dims
        self.max_tokens = max_tokens
        self.variant = variant
        self.pooling = pooling
        self.normalized = normalized
        self.pad_id = pad_id
        self._tok = tokenizer
        self._session = session
        self._output = output_name
        self._pooled_in_graph = pooled_in_graph
        self._extra_inputs = extra_inputs        # input name -> "zeros" (e.g. token_type_ids)
        self.provider = "CPUExecutionProvider"   # the onnxruntime execution provider that runs it
        self.per_text = variant in PER_TEXT_VARIANTS  # see PER_TEXT_VARIANTS

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, source: str | Path, variant: str = "int8", intra_op_threads: int | None = None,
             provider: str | None = None) -> OnnxEncoder:
        """``provider``: cpu | cuda | auto (default: VIEN_ONNX_PROVIDER, else cpu)."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r} (expected one of {', '.join(VARIANTS)})")
        directory = _resolve_source(source)
        meta_path = directory / META_FILE
        meta: dict = {}
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ModelLoadError(f"{meta_path}: invalid JSON ({exc})") from exc
            files = meta.get("files") or {}
            if variant not in files:
                raise ModelLoadError(f"{directory}: no {variant!r} variant in {META_FILE} "
                                     f"(has: {', '.join(sorted(files)) or 'none'})")
            model_path = directory / files[variant]
            if not model_path.is_file():
                raise ModelLoadError(f"{directory}: {META_FILE} names {files[variant]!r} but {model_path} is missing")
            tok_path = directory / meta.get("tokenizer", "tokenizer.json")
        else:
            cands = [directory / c for c in _PLAIN_FILES[variant]]
            found = [c for c in cands if c.is_file()]
            if not found:
                raise ModelLoadError(
                    f"{directory} is not a model directory: no {META_FILE} and no {variant} ONNX file "
                    f"(looked for {', '.join(_PLAIN_FILES[variant])})")
            model_path = found[0]
            tok_path = directory / "tokenizer.json"
        if not tok_path.is_file():
            raise ModelLoadError(f"{directory}: tokenizer file {tok_path.name} is missing")

        try:
            tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as exc:
            raise ModelLoadError(f"{tok_path}: cannot load tokenizer ({exc})") from exc
        tokenizer.no_truncation()
        tokenizer.no_padding()

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.enable_mem_pattern = True
        so.intra_op_num_threads = int(intra_op_threads) if intra_op_threads else default_threads()
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # No busy-waiting between ops by default: on a laptop the router, gRPC threads and Redis share these
        # cores, and spinning intra-op threads steal the CPU they need. With cores of its own (the Helm
        # chart's query-embedder) spinning saves the thread wake-ups: VIEN_ORT_SPIN=1 (bench/RESULTS.md).
        spin = "1" if env.get("VIEN_ORT_SPIN") else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", spin)
        if spin == "1" and env.get("VIEN_ORT_SPIN_US"):
            so.add_session_config_entry("session.intra_op.spin_duration_us", str(env.get("VIEN_ORT_SPIN_US")))
        setting = provider_setting(provider)
        wanted, why = providers_for(setting, list(ort.get_available_providers()))
        try:
            session = ort.InferenceSession(str(model_path), so, providers=wanted)
        except Exception as exc:
            if wanted == [CPU]:
                raise ModelLoadError(f"{model_path}: onnxruntime cannot load it ({exc})") from exc
            why = f"{PROVIDER_ENV}={setting} but CUDA failed ({exc}); falling back to CPU"
            try:
                session = ort.InferenceSession(str(model_path), so, providers=[CPU])
            except Exception as exc2:
                raise ModelLoadError(f"{model_path}: onnxruntime cannot load it ({exc2})") from exc2
        running = session.get_providers()[0]
        if wanted[0] == CUDA and running != CUDA:   # onnxruntime dropped CUDA itself (no GPU or driver)
            why = f"{PROVIDER_ENV}={setting} but CUDA is not usable here (no GPU or driver); falling back to CPU"
        log.info("onnx model %s (%s) runs on %s (%s)", model_path.parent.name, variant, running, why)

        in_names = {i.name for i in session.get_inputs()}
        for required in ("input_ids", "attention_mask"):
            if required not in in_names:
                raise ModelLoadError(f"{model_path}: graph has no {required!r} input (inputs: {sorted(in_names)})")
        extra = {n: "zeros" for n in in_names - {"input_ids", "attention_mask"}}
        if set(extra) - {"token_type_ids"}:
            raise ModelLoadError(f"{model_path}: unsupported graph inputs {sorted(set(extra) - {'token_type_ids'})}")
        outs = {o.name: o for o in session.get_outputs()}
        output = next((n for n in _EMBEDDING_OUTPUTS if n in outs), None)
        pooled_in_graph = output is not None
        if output is None:
            output = next((n for n in _HIDDEN_OUTPUTS if n in outs), None)
            if output is None:
                raise ModelLoadError(f"{model_path}: no embedding or last_hidden_state output "
                                     f"(outputs: {sorted(outs)})")
        shape = outs[output].shape
        dims = meta.get("dims") or (shape[-1] if isinstance(shape[-1], int) else None)

        plain_cfg = _plain_config(directory) if not meta else {}
        max_tokens = int(meta.get("max_tokens") or plain_cfg.get("max_tokens") or 512)
        pad_id = tokenizer.token_to_id("<pad>")
        if pad_id is None:
            pad_id = tokenizer.token_to_id("[PAD]")
        enc = cls(directory=directory, model_path=model_path, tokenizer=tokenizer, session=session,
                  model_id=str(meta.get("model_id") or plain_cfg.get("model_id") or
                               (directory.name if _is_local(source) else source)),
                  revision=str(meta.get("revision") or _file_revision(model_path)),
                  dims=int(dims or 0), max_tokens=max_tokens, variant=variant,
                  pooling=str(meta.get("pooling") or plain_cfg.get("pooling") or "mean"),
                  normalized=bool(meta.get("normalized", True)), pad_id=int(pad_id or 0),
                  output_name=output, pooled_in_graph=pooled_in_graph, extra_inputs=extra)
        enc.provider = running
        if not enc.dims:
            enc.dims = int(enc.embed_ids([enc.tokenize(["probe"])[0]]).shape[1])
        return enc

    # ------------------------------------------------------------------ tokens
    @staticmethod
    def _prepare(text: str) -> str:
        return unicodedata.normalize("NFC", text).strip()

    def tokenize(self, texts: list[str], max_tokens: int | None = None) -> list[list[int]]:
        """Token ids with specials; truncated to ``max_tokens`` keeping the final special (None: untruncated)."""
        encs = self._tok.encode_batch([self._prepare(t) for t in texts], add_special_tokens=True)
        out = [e.ids for e in encs]
        if max_tokens is not None:
            if max_tokens < 2:
                raise ValueError(f"max_tokens must be at least 2, got {max_tokens}")
            out = [ids if len(ids) <= max_tokens else [*ids[:max_tokens - 1], ids[-1]] for ids in out]
        return out

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenize(texts, max_tokens=None)]

    # ------------------------------------------------------------------ embedding
    def embed_ids(self, batch: list[list[int]]) -> np.ndarray:
        """Embeddings float32 [n, dims] for token-id lists (right-padded to the longest in the batch;
        one at a time for a PER_TEXT_VARIANTS graph)."""
        n = len(batch)
        if n == 0:
            return np.zeros((0, self.dims), np.float32)
        if self.per_text and n > 1:
            return np.concatenate([self._run([ids]) for ids in batch])
        return self._run(batch)

    def _run(self, batch: list[list[int]]) -> np.ndarray:
        n = len(batch)
        lengths = [len(ids) for ids in batch]
        longest = max(lengths)
        if min(lengths) == 0:
            raise ValueError("empty token id list")
        if longest > self.max_tokens:
            raise ValueError(f"a text has {longest} tokens, more than the model's {self.max_tokens}")
        ids = np.full((n, longest), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, longest), dtype=np.int64)
        for i, row in enumerate(batch):
            ids[i, :len(row)] = row
            mask[i, :len(row)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        for name in self._extra_inputs:
            feeds[name] = np.zeros_like(ids)
        out = self._session.run([self._output], feeds)[0]
        if not self._pooled_in_graph:
            out = self._pool(out.astype(np.float32, copy=False), mask)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        m = mask.astype(np.float32)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling in ("last", "last_token"):
            pooled = hidden[np.arange(len(hidden)), mask.sum(1) - 1]
        else:
            pooled = (hidden * m[:, :, None]).sum(1) / np.maximum(m.sum(1, keepdims=True), 1e-9)
        if self.normalized:
            pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embed_ids(self.tokenize(texts, max_tokens=self.max_tokens))

    def __repr__(self) -> str:
        return (f"OnnxEncoder({self.model_id!r}, revision={self.revision!r}, variant={self.variant!r}, "
                f"dims={self.dims}, path={str(self.model_path)!r})")


def _plain_config(directory: Path) -> dict:
    out: dict = {}
    for name in ("tokenizer_config.json", "config.json", "sentence_bert_config.json"):
        try:
            cfg = json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if name == "tokenizer_config.json" and isinstance(cfg.get("model_max_length"), int) \
                and cfg["model_max_length"] < 1_000_000:
            out.setdefault("max_tokens", cfg["model_max_length"])
        if name == "sentence_bert_config.json" and isinstance(cfg.get("max_seq_length"), int):
            out["max_tokens"] = cfg["max_seq_length"]
        if name == "config.json" and isinstance(cfg.get("_name_or_path"), str) and cfg["_name_or_path"]:
            out.setdefault("model_id", cfg["_name_or_path"])
    try:
        pooling = json.loads((directory / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
        if pooling.get("pooling_mode_cls_token"):
            out["pooling"] = "cls"
        elif pooling.get("pooling_mode_lasttoken"):
            out["pooling"] = "last"
    except (OSError, ValueError):
        pass
    return out


def _file_revision(path: Path) -> str:
    st = path.stat()
    return f"local-{st.st_size:x}-{int(st.st_mtime):x}"


class TokenCounter:
    """The tokenizer of a model directory without its ONNX session (for chunking in the ingest worker)."""

    def __init__(self, source: str | Path) -> None:
        from tokenizers import Tokenizer

        directory = _resolve_source(source)
        name = "tokenizer.json"
        meta_path = directory / META_FILE
        if meta_path.is_file():
            try:
                name = json.loads(meta_path.read_text(encoding="utf-8")).get("tokenizer", name)
            except ValueError as exc:
                raise ModelLoadError(f"{meta_path}: invalid JSON ({exc})") from exc
        path = directory / name
        if not path.is_file():
            raise ModelLoadError(f"{directory}: tokenizer file {name} is missing")
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_truncation()
        self._tok.no_padding()

    def count(self, texts: list[str]) -> list[int]:
        encs = self._tok.encode_batch([OnnxEncoder._prepare(t) for t in texts], add_special_tokens=True)
        return [len(e.ids) for e in encs]
