"""Export a Qwen3-Embedding model (any size) to ONNX for vien's query side, with a fidelity report.

The graph takes ``input_ids`` and ``attention_mask`` and returns ``embedding`` [batch, dims]:

- position ids come from the mask (``cumsum(mask) - 1``), and the pooled state is the one at the *last
  attended position* of each row, so a row gives the same vector whether the batch is padded on the left
  (as Qwen3-Embedding's reference code does), on the right (as vien's OnnxEncoder does) or not at all;
- optional MRL slice to ``dims`` (Qwen3-Embedding is Matryoshka-trained), then L2 normalisation.

``tokenizer.json`` is written beside it; if the source tokenizer does not append the end-of-text token
(the token Qwen3-Embedding pools), a post-processor that appends it is added.

Fidelity: a probe set of Vietnamese and English queries (with the ``Instruct: {task}\\nQuery:{text}``
prefix) and plain documents is embedded by the torch model, one text at a time (no padding), and by
each exported variant through vien's own OnnxEncoder in one mixed-length padded batch. fp32 is always
kept (it is the reference variant); fp16 (fp16 weights, fp32 compute: half the file, CPU friendly) and
int8 (onnxruntime dynamic quantisation, several recipes tried in order) are kept only when their minimum
cosine to torch is at least ``min_cosine`` (0.99). Plain dynamic int8 is reported to collapse on real
Qwen3 checkpoints (min cosine ~0.64); the report says what was measured and what was dropped.

Needs the ``export`` extra (torch, transformers); the vien runtime does not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("vien_tools.build.export_qwen3")

BUILD_VERSION = "qwen3-export-1"
OPSET = 17
MIN_COSINE = 0.99
META_FILE = "vien_model.json"
FIDELITY_FILE = "fidelity.json"
TOKENIZER_FILE = "tokenizer.json"
FILES = {"fp32": "model.onnx", "fp16": "model_fp16.onnx", "int8": "model_int8.onnx"}
DTYPES = ("fp32", "fp16", "int8")
EXTERNAL_DATA_BYTES = 1_800_000_000     # protobuf's 2 GB limit: larger graphs keep weights in <file>.data
INSTALL_HINT = "pip install 'vien[export]'  (or: pip install torch==2.13.0 transformers)"

DEFAULT_TASK = "Given a web search query, retrieve relevant passages that answer the query"
QUERY_TEMPLATE = "Instruct: {task}\nQuery:{text}"

PROBE_QUERIES = [
    "giá vé máy bay đi Đà Nẵng",
    "gia ve may bay di da nang",
    "cheap flights to Da Nang",
    "làm hộ chiếu mất bao lâu",
    "thủ tục đăng ký kết hôn với người nước ngoài cần giấy tờ gì?",
    "how long does it take to renew a passport",
    "Luật Đất đai 2024 có hiệu lực từ ngày nào",
    "best phở in Hà Nội",
    "triệu chứng sốt xuất huyết ở trẻ em và cách chăm sóc tại nhà",
    "what is the capital of Vietnam",
    "lãi suất tiết kiệm ngân hàng nào cao nhất tháng này",
    "AI",
]
PROBE_DOCUMENTS = [
    "Hà Nội là thủ đô của Việt Nam.",
    "The committee approved the new budget after a long debate.",
    "Ngân hàng Nhà nước giữ nguyên lãi suất điều hành trong quý này, trong khi nhiều ngân hàng thương mại "
    "tăng lãi suất huy động kỳ hạn 12 tháng.",
    "thu tuc xin giay phep xay dung nha o rieng le",
]


class ExportError(RuntimeError):
    """The export cannot run; the message says why (missing extra, unreadable source, ...)."""


def query_prompt(text: str, task: str = DEFAULT_TASK) -> str:
    return QUERY_TEMPLATE.replace("{task}", task).replace("{text}", text)


def probe_texts(task: str = DEFAULT_TASK) -> list[str]:
    """The probe set as the models see it: instructed queries, then plain documents."""
    return [query_prompt(q, task) for q in PROBE_QUERIES] + list(PROBE_DOCUMENTS)


def prepare_text(text: str) -> str:
    """What OnnxEncoder does to every text before tokenising."""
    return unicodedata.normalize("NFC", text).strip()


def require_torch() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise ExportError(f"exporting Qwen3 to ONNX needs torch and transformers ({exc.name} is missing): "
                          f"{INSTALL_HINT}") from None
    return torch, transformers


# ============================================================================ source
def resolve_source(source: str | Path) -> tuple[Path, str]:
    """(local directory, revision). A Hugging Face id is fetched with huggingface_hub (the commit is the revision)."""
    p = Path(os.path.expanduser(str(source)))
    if p.is_dir():
        return p, _local_revision(p)
    if isinstance(source, Path) or str(source).startswith(("/", "./", "../", "~")):
        raise ExportError(f"model directory {p} does not exist")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ExportError(f"{source!r} is not a local directory; fetching it from the Hugging Face hub needs "
                          "huggingface_hub (pip install 'vien[hub]')") from None
    try:
        d = Path(snapshot_download(str(source), allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as exc:
        raise ExportError(f"cannot fetch {source!r} from the Hugging Face hub: {exc}") from exc
    return d, d.name  # snapshots/<commit sha>


def _local_revision(d: Path) -> str:
    """A cheap content fingerprint: config, tokenizer, and size + first MiB of every weight file."""
    h = hashlib.sha256()
    for name in ("config.json", "tokenizer.json"):
        with contextlib.suppress(OSError):
            h.update((d / name).read_bytes())
    for w in sorted([*d.glob("*.safetensors"), *d.glob("*.bin")]):
        h.update(f"{w.name}:{w.stat().st_size}".encode())
        with open(w, "rb") as f:
            h.update(f.read(1 << 20))
    return "local-" + h.hexdigest()[:16]


def _eos_token(d: Path, model_config: Any, tok: Any) -> tuple[str, int]:
    """The token Qwen3-Embedding pools: <|endoftext|> (its pad token and config.json's eos_token_id; not
    tokenizer_config.json's eos_token, which is the chat model's <|im_end|>). Other vocabularies: config.json's
    eos_token_id, then tokenizer_config.json's eos_token."""
    if tok.token_to_id("<|endoftext|>") is not None:
        return "<|endoftext|>", int(tok.token_to_id("<|endoftext|>"))
    eos_id = getattr(model_config, "eos_token_id", None)
    if isinstance(eos_id, list):
        eos_id = eos_id[0] if eos_id else None
    if eos_id is not None and tok.id_to_token(int(eos_id)) is not None:
        return str(tok.id_to_token(int(eos_id))), int(eos_id)
    name = None
    with contextlib.suppress(OSError, ValueError):
        cfg = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
        eos = cfg.get("eos_token")
        name = eos.get("content") if isinstance(eos, dict) else eos
    if name and tok.token_to_id(name) is not None:
        return name, int(tok.token_to_id(name))
    raise ExportError(f"{d}: cannot find the end-of-text token (no <|endoftext|> in the vocabulary, no "
                      "eos_token_id in config.json, no eos_token in tokenizer_config.json)")


def prepare_tokenizer(d: Path, model_config: Any) -> tuple[Any, str, int, bool]:
    """(tokenizer appending EOS, eos token, eos id, whether this exporter added the EOS post-processor)."""
    from tokenizers import Tokenizer, processors

    path = d / TOKENIZER_FILE
    if not path.is_file():
        raise ExportError(f"{d}: no {TOKENIZER_FILE} (a fast tokenizer file is required)")
    tok = Tokenizer.from_file(str(path))
    tok.no_padding()
    tok.no_truncation()
    eos, eos_id = _eos_token(d, model_config, tok)
    probe = tok.encode("probe", add_special_tokens=True).ids
    if probe and probe[-1] == eos_id:
        return tok, eos, eos_id, False
    tok.post_processor = processors.TemplateProcessing(single=f"$A:0 {eos}:0", pair=f"$A:0 $B:1 {eos}:1",
                                                       special_tokens=[(eos, eos_id)])
    if tok.encode("probe", add_special_tokens=True).ids[-1] != eos_id:
        raise ExportError(f"{path}: cannot make the tokenizer append {eos!r}")
    return tok, eos, eos_id, True


# ============================================================================ torch side
def load_model(d: Path) -> Any:
    torch, transformers = require_torch()
    try:
        model = transformers.AutoModel.from_pretrained(str(d), dtype=torch.float32, attn_implementation="eager")
    except Exception as exc:
        raise ExportError(f"{d}: transformers cannot load it ({type(exc).__name__}: {exc})") from exc
    mt = getattr(model.config, "model_type", "")
    if not str(mt).startswith("qwen3"):
        raise ExportError(f"{d}: model_type {mt!r} is not a Qwen3 model")
    return model.eval()


def make_wrapper(model: Any, dims: int | None) -> Any:
    torch, _ = require_torch()

    class LastTokenEmbedder(torch.nn.Module):  # type: ignore[name-defined]
        """input_ids, attention_mask -> L2-normalised hidden state at the last attended position."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            mask = attention_mask.to(torch.int64)
            position_ids = (mask.cumsum(1) - 1).clamp(min=0)
            hidden = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                                use_cache=False).last_hidden_state
            positions = torch.arange(input_ids.shape[1], dtype=torch.int64, device=input_ids.device)
            last = (mask * positions.unsqueeze(0)).argmax(dim=1)          # last attended position per row
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
            if dims is not None:
                pooled = pooled[:, :dims]
            return torch.nn.functional.normalize(pooled, p=2.0, dim=-1, eps=1e-12)

    return LastTokenEmbedder().eval()


def torch_reference(model: Any, ids: list[list[int]], dims: int | None) -> np.ndarray:
    """The torch model on each text alone (no padding): last token, MRL slice, L2 norm."""
    torch, _ = require_torch()
    out = []
    with torch.inference_mode():
        for row in ids:
            t = torch.tensor([row], dtype=torch.int64)
            h = model(input_ids=t, attention_mask=torch.ones_like(t), use_cache=False).last_hidden_state[0, -1]
            out.append(h.float().numpy())
    v = np.stack(out)
    if dims is not None:
        v = v[:, :dims]
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def _sample_batch(ids: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """A right-padded batch of two different lengths: the traced graph must take the general mask path."""
    rows = sorted(ids, key=len)
    a, b = rows[-1], rows[0] if len(rows[0]) < len(rows[-1]) else rows[-1][:-1]
    n = len(a)
    x = np.full((2, n), pad_id, np.int64)
    m = np.zeros((2, n), np.int64)
    for i, r in enumerate((a, b)):
        x[i, :len(r)] = r
        m[i, :len(r)] = 1
    return x, m


def export_fp32(wrapper: Any, sample: tuple[np.ndarray, np.ndarray], out_path: Path) -> str:
    """torch.onnx.export (TorchScript exporter, opset 17) to ``out_path``; returns the exporter's name."""
    import onnx

    torch, _ = require_torch()
    ids, mask = (torch.from_numpy(a) for a in sample)
    with tempfile.TemporaryDirectory(prefix="vien-qwen3-") as tmp:
        raw = Path(tmp) / "model.onnx"
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, (ids, mask), str(raw), dynamo=False, opset_version=OPSET, do_constant_folding=True,
                input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                              "attention_mask": {0: "batch", 1: "sequence"}, "embedding": {0: "batch"}})
        model = onnx.load(str(raw), load_external_data=True)
    model.producer_name = "vien_tools.build.export_qwen3"
    save_onnx(model, out_path)
    return f"torch.onnx.export (TorchScript, opset {OPSET}, torch {torch.__version__})"


def save_onnx(model: Any, path: Path) -> None:
    """Save, keeping the weights in ``<name>.data`` beside it when the graph is over protobuf's 2 GB limit."""
    import onnx

    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)
    if model.ByteSize() > EXTERNAL_DATA_BYTES:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


def _is_large(path: Path) -> bool:
    return path.with_name(path.name + ".data").exists()


# ============================================================================ lower precision
def make_fp16(fp32_path: Path, out_path: Path) -> str:
    """fp16 weights, fp32 compute: every float initializer of 1024+ elements is stored as fp16 and cast back
    at load (onnxruntime folds the casts), halving the file; the arithmetic stays fp32 (CPU friendly)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(fp32_path), load_external_data=True)
    g = model.graph
    casts: list[Any] = []
    for init in g.initializer:
        if init.data_type != TensorProto.FLOAT:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < 1024:
            continue
        name = init.name
        half = numpy_helper.from_array(arr.astype(np.float16), name + "__fp16")
        init.CopyFrom(half)
        casts.append(helper.make_node("Cast", [name + "__fp16"], [name], name=f"cast_fp16_{len(casts)}",
                                      to=TensorProto.FLOAT))
    for i, node in enumerate(casts):
        g.node.insert(i, node)
    save_onnx(model, out_path)
    return f"fp16 weights ({len(casts)} tensors), fp32 compute"


@dataclass(frozen=True)
class Int8Recipe:
    name: str
    description: str
    exclude: tuple[str, ...]  # substrings of MatMul node names left in fp32


INT8_RECIPES = (
    Int8Recipe("dynamic-per-channel", "onnxruntime dynamic int8, per-channel signed weights, every MatMul", ()),
    Int8Recipe("dynamic-per-channel-fp32-mlp-down", "as dynamic-per-channel, but the MLP down projections "
               "(the activation outliers of Qwen3) stay fp32", ("down_proj",)),
)


def make_int8(fp32_path: Path, out_path: Path, recipe: Int8Recipe) -> str:
    import onnx
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fp32_path), load_external_data=False)
    exclude = [n.name for n in model.graph.node
               if n.op_type == "MatMul" and any(s in n.name for s in recipe.exclude)]
    root = logging.getLogger()
    prev, root.disabled = root.disabled, True   # silence quantize_dynamic's pre-processing hint
    try:
        quantize_dynamic(str(fp32_path), str(out_path), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude,
                         use_external_data_format=_is_large(fp32_path),
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT})
    finally:
        root.disabled = prev
    return recipe.description + (f" ({len(exclude)} MatMuls kept fp32)" if exclude else "")


# ============================================================================ fidelity
def measure(out_dir: Path, variant: str, texts: list[str], ref: np.ndarray) -> dict[str, Any]:
    """Cosines of the exported variant (through vien's OnnxEncoder, one padded mixed-length batch) to torch."""
    from vien.models.onnx_encoder import OnnxEncoder

    enc = OnnxEncoder.load(out_dir, variant=variant)
    got = enc.embed_ids(enc.tokenize(texts, max_tokens=None))
    cos = (got * ref).sum(axis=1) / np.maximum(np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    worst = int(np.argmin(cos))
    return {"min_cosine": round(float(cos.min()), 6), "mean_cosine": round(float(cos.mean()), 6),
            "worst_text": texts[worst], "cosines": [round(float(c), 6) for c in cos]}


def _write_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    tmp = out_dir / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / META_FILE)


def _remove_variant(out_dir: Path, variant: str) -> None:
    p = out_dir / FILES[variant]
    p.unlink(missing_ok=True)
    p.with_name(p.name + ".data").unlink(missing_ok=True)


# ============================================================================ export
def export(source: str | Path, out_dir: str | Path, dtypes: tuple[str, ...] | list[str] = ("fp32",),
           dims: int | None = None, *, max_tokens: int | None = None, task: str = DEFAULT_TASK,
           min_cosine: float = MIN_COSINE, model_id: str | None = None, revision: str | None = None,
           texts: list[str] | None = None) -> dict[str, Any]:
    """Export ``source`` (a directory or a Hugging Face id) into ``out_dir``; returns the report (also in
    ``fidelity.json``). fp32 is always exported and kept; fp16/int8 only when they measure >= min_cosine."""
    t0 = time.perf_counter()
    require_torch()
    unknown = sorted(set(dtypes) - set(DTYPES))
    if unknown:
        raise ExportError(f"unknown dtype(s) {unknown}; expected some of {list(DTYPES)}")
    src, src_revision = resolve_source(source)
    model = load_model(src)
    cfg = model.config
    hidden = int(cfg.hidden_size)
    if dims is not None and not 1 <= dims <= hidden:
        raise ExportError(f"--dims {dims} is out of range; this model has {hidden} dimensions (MRL: 32..{hidden})")
    out_dims = dims or hidden
    tok, eos, _eos_id, eos_added = prepare_tokenizer(src, cfg)
    max_pos = int(getattr(cfg, "max_position_embeddings", 32768) or 32768)
    max_tokens = int(max_tokens or max_pos)
    if not 2 <= max_tokens <= max_pos:
        raise ExportError(f"max_tokens {max_tokens} is out of range 2..{max_pos}")

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)
    for v in DTYPES:
        _remove_variant(out, v)
    tok.save(str(out / TOKENIZER_FILE))

    texts = [prepare_text(t) for t in (texts or probe_texts(task))]
    ids = [e.ids for e in tok.encode_batch(texts, add_special_tokens=True)]
    ref = torch_reference(model, ids, dims)
    pad_id = tok.token_to_id("<pad>")
    if pad_id is None:
        pad_id = tok.token_to_id("[PAD]")

    t_exp = time.perf_counter()
    exporter = export_fp32(make_wrapper(model, dims), _sample_batch(ids, int(pad_id or 0)), out / FILES["fp32"])
    export_s = time.perf_counter() - t_exp
    del model

    meta: dict[str, Any] = {
        "model_id": model_id or str(getattr(cfg, "_name_or_path", "") or source),
        "source": str(source),
        "revision": revision or src_revision,
        "build_version": BUILD_VERSION,
        "exporter": exporter,
        "dims": out_dims,
        "model_dims": hidden,
        "mrl": True,
        "min_dims": min(32, out_dims),
        "max_tokens": max_tokens,
        "pooling": "last_token",
        "normalized": True,
        # The graph derives position ids from the mask and pools the last attended position, so left and
        # right padding give the same vectors; OnnxEncoder pads on the right.
        "padding_side": "right",
        "padding_sides_supported": ["left", "right"],
        "files": {v: FILES[v] for v in DTYPES},      # provisional: every candidate, for measuring
        "tokenizer": TOKENIZER_FILE,
        "eos_token": eos,
        "eos_appended_by_exporter": eos_added,
        "text_preprocessing": ["NFC", "strip"],
        "query_prompt": query_prompt("{text}", task),
        "document_prompt": "{text}",
        "task": task,
    }
    _write_meta(out, meta)

    variants: dict[str, Any] = {}
    fp32 = measure(out, "fp32", texts, ref)
    variants["fp32"] = {"kept": True, "method": "fp32", **fp32}
    if fp32["min_cosine"] < min_cosine:
        log.warning("fp32 export measures min cosine %.4f to torch (below %.2f): check the export",
                    fp32["min_cosine"], min_cosine)
    if "fp16" in dtypes:
        method = make_fp16(out / FILES["fp32"], out / FILES["fp16"])
        m = measure(out, "fp16", texts, ref)
        variants["fp16"] = {"kept": m["min_cosine"] >= min_cosine, "method": method, **m}
        if not variants["fp16"]["kept"]:
            _remove_variant(out, "fp16")
    if "int8" in dtypes:
        tried = []
        kept = None
        for recipe in INT8_RECIPES:
            method = make_int8(out / FILES["fp32"], out / FILES["int8"], recipe)
            m = measure(out, "int8", texts, ref)
            entry = {"recipe": recipe.name, "method": method, "kept": m["min_cosine"] >= min_cosine, **m}
            tried.append(entry)
            if entry["kept"]:
                kept = entry
                break
        if kept is None:
            _remove_variant(out, "int8")
        variants["int8"] = {**(kept or tried[-1]), "kept": kept is not None,
                            "recipes_tried": [{k: e[k] for k in ("recipe", "min_cosine", "mean_cosine", "kept")}
                                              for e in tried]}
    for v in DTYPES:
        if v not in variants:
            _remove_variant(out, v)

    report = {
        "model_id": meta["model_id"], "revision": meta["revision"], "dims": out_dims, "min_cosine_rule": min_cosine,
        "reference": "torch (transformers) fp32, each text alone, last token, L2 norm",
        "measured_with": "vien OnnxEncoder, all probe texts in one right-padded mixed-length batch",
        "probe_texts": texts,
        "variants": variants,
        "kept": [v for v in DTYPES if variants.get(v, {}).get("kept")],
        "dropped": [v for v in DTYPES if v in variants and not variants[v]["kept"]],
        "export_seconds": round(export_s, 2),
        "total_seconds": round(time.perf_counter() - t0, 2),
    }
    (out / FIDELITY_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    meta["files"] = {v: FILES[v] for v in report["kept"]}
    meta["fidelity"] = {v: {"min_cosine": variants[v]["min_cosine"], "mean_cosine": variants[v]["mean_cosine"],
                            "kept": variants[v]["kept"]} for v in variants}
    meta["fidelity_report"] = FIDELITY_FILE
    _write_meta(out, meta)
    return report


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The report without per-text cosines (what the CLI prints)."""
    return {**{k: v for k, v in report.items() if k not in ("probe_texts", "variants")},
            "variants": {v: {k: e[k] for k in ("kept", "min_cosine", "mean_cosine", "method", "worst_text")
                             if k in e} | ({"recipes_tried": e["recipes_tried"]} if "recipes_tried" in e else {})
                         for v, e in report["variants"].items()}}
