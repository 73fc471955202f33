"""`vien export-onnx` on a tiny randomly initialised Qwen3 (no model hub here), against the torch model:

- the fp32 ONNX graph (last token at the last attended position, L2 norm) equals torch per text, for
  right-padded (OnnxEncoder), left-padded (Qwen3-Embedding's own recipe) and unpadded mixed-length batches;
- fp16/int8 are kept exactly when they measure min cosine >= 0.99 (the rule, not a particular outcome);
- `--dims` slices the MRL prefix in the graph; the tokenizer written beside the graph appends <|endoftext|>;
- the shipped Qwen3 profiles file. (The space guard on the ONNX-query / vLLM-document pair runs against a real
  vLLM in test_vllm.py.)

Needs the `export` extra: pip install torch==2.13.0 transformers. Without it these tests FAIL (not skip).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vien.models.onnx_encoder import ModelLoadError, OnnxEncoder
from vien.runtime.config import load_config
from vien_tools.build import export_qwen3 as xq

CONFIG_DIR = Path(__file__).resolve().parents[1] / "services" / "vien" / "config"
EOS = "<|endoftext|>"
HIDDEN = 64


def _torch() -> Any:
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"the Qwen3 export tests need torch and transformers ({exc.name} is not installed): "
                    f"{xq.INSTALL_HINT}", pytrace=False)
    torch.set_num_threads(2)
    return torch


def _build_tiny_qwen3(d: Path, seed: int = 0) -> None:
    """A 2-layer Qwen3 with random weights and a WordLevel tokenizer over the probe words (no EOS appended:
    the exporter must add it). The EOS id comes from config.json (eos_token_id)."""
    torch = _torch()
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import Qwen3Config, Qwen3Model

    from vien_doc_embedder.space_guard import PROBES

    words: list[str] = []
    pre = pre_tokenizers.Whitespace()
    for t in [*xq.probe_texts(), *PROBES]:
        for w, _ in pre.pre_tokenize_str(xq.prepare_text(t)):
            if w not in words:
                words.append(w)
    vocab = {"<unk>": 0, EOS: 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre
    d.mkdir(parents=True, exist_ok=True)
    tok.save(str(d / "tokenizer.json"))
    cfg = Qwen3Config(vocab_size=len(vocab), hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                      eos_token_id=1, bos_token_id=1, pad_token_id=None, tie_word_embeddings=True)
    torch.manual_seed(seed)
    Qwen3Model(cfg).eval().save_pretrained(str(d))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny-qwen3")
    _build_tiny_qwen3(d)
    return d


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("tiny-qwen3-onnx")
    report = xq.export(tiny, out, dtypes=("fp32", "fp16", "int8"), model_id="test/tiny-qwen3")
    return out, report


@pytest.fixture(scope="module")
def torch_model(tiny) -> Any:
    _torch()
    return xq.load_model(tiny)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_fp32_onnx_equals_torch_for_padded_mixed_length_batches(exported, torch_model):
    out, report = exported
    meta = json.loads((out / "vien_model.json").read_text(encoding="utf-8"))
    assert meta["pooling"] == "last_token" and meta["normalized"] is True and meta["dims"] == HIDDEN
    assert meta["files"]["fp32"] == "model.onnx" and meta["tokenizer"] == "tokenizer.json"
    assert meta["eos_token"] == EOS and meta["eos_appended_by_exporter"] is True
    assert meta["query_prompt"] == f"Instruct: {xq.DEFAULT_TASK}\nQuery:{{text}}"
    assert meta["document_prompt"] == "{text}" and meta["revision"].startswith("local-")
    assert report["variants"]["fp32"]["min_cosine"] >= 0.9999 and "fp32" in report["kept"]

    enc = OnnxEncoder.load(out, variant="fp32")
    assert (enc.pooling, enc.dims, enc.model_id) == ("last_token", HIDDEN, "test/tiny-qwen3")
    texts = xq.probe_texts()
    ids = enc.tokenize(texts)
    assert all(row[-1] == 1 for row in ids), "the tokenizer beside the graph must append <|endoftext|>"
    lengths = sorted({len(r) for r in ids})
    assert len(lengths) >= 5 and lengths[-1] >= 3 * lengths[0], lengths  # really mixed lengths
    ref = xq.torch_reference(torch_model, ids, None)

    # right padding (what OnnxEncoder does), one batch of every length, and texts alone
    right = enc.embed_ids(ids)
    alone = np.stack([enc.embed_ids([r])[0] for r in ids])
    assert _cos(right, ref).min() >= 0.9999
    assert _cos(alone, ref).min() >= 0.9999
    np.testing.assert_allclose(right, alone, atol=1e-5)

    # left padding (Qwen3-Embedding's recipe), straight into the graph
    n = max(len(r) for r in ids)
    x = np.zeros((len(ids), n), np.int64)
    m = np.zeros_like(x)
    for i, r in enumerate(ids):
        x[i, n - len(r):], m[i, n - len(r):] = r, 1
    left = enc._session.run(["embedding"], {"input_ids": x, "attention_mask": m})[0]
    assert _cos(left, ref).min() >= 0.9999

    # and the torch model itself on the left-padded batch (last position), as the model card does it
    torch = _torch()
    with torch.inference_mode():
        h = torch_model(input_ids=torch.from_numpy(x), attention_mask=torch.from_numpy(m)).last_hidden_state[:, -1]
    assert _cos(left, h.numpy()).min() >= 0.9999


def test_lower_precision_variants_are_kept_only_when_they_measure_at_least_099(exported):
    out, _ = exported
    meta = json.loads((out / "vien_model.json").read_text(encoding="utf-8"))
    fid = json.loads((out / "fidelity.json").read_text(encoding="utf-8"))
    assert fid["variants"].keys() == {"fp32", "fp16", "int8"} and fid["min_cosine_rule"] == 0.99
    for v in ("fp16", "int8"):
        r = fid["variants"][v]
        assert len(r["cosines"]) == len(fid["probe_texts"])
        assert r["min_cosine"] == pytest.approx(min(r["cosines"]), abs=1e-6)
        assert r["kept"] == (r["min_cosine"] >= 0.99), r
        assert (v in meta["files"]) == r["kept"] == (out / xq.FILES[v]).is_file() == (v in fid["kept"])
        assert meta["fidelity"][v]["kept"] == r["kept"]
        if r["kept"]:
            OnnxEncoder.load(out, variant=v)
        else:
            with pytest.raises(ModelLoadError, match=f"no '{v}' variant"):
                OnnxEncoder.load(out, variant=v)
    tried = fid["variants"]["int8"]["recipes_tried"]
    assert [t["recipe"] for t in tried] == [r.name for r in xq.INT8_RECIPES][:len(tried)]
    assert all(not t["kept"] for t in tried[:-1])                       # stops at the first recipe that holds
    assert fid["variants"]["int8"]["kept"] == tried[-1]["kept"]
    print("\nfidelity:", {v: (r["min_cosine"], r["mean_cosine"], r["kept"]) for v, r in fid["variants"].items()},
          "int8 recipes:", [(t["recipe"], t["min_cosine"]) for t in tried])


def test_cli_exports_an_mrl_slice(tiny, torch_model, tmp_path, capsys):
    from vien_tools.cli.export import add_parser

    parser = argparse.ArgumentParser(prog="vien")
    add_parser(parser.add_subparsers(dest="cmd", required=True))
    # an impossible bar for int8 exercises the drop path: every recipe tried, none kept, fp32 stays
    ns = parser.parse_args(["export-onnx", str(tiny), "--out", str(tmp_path / "m"), "--dims", "32",
                            "--max-tokens", "256", "--dtype", "int8", "--min-cosine", "0.99999", "--require-all"])
    assert ns.fn(ns) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["dims"] == 32 and printed["variants"]["fp32"]["min_cosine"] >= 0.9999
    assert printed["kept"] == ["fp32"] and printed["dropped"] == ["int8"]
    assert len(printed["variants"]["int8"]["recipes_tried"]) == len(xq.INT8_RECIPES)
    assert not (tmp_path / "m" / xq.FILES["int8"]).exists()
    enc = OnnxEncoder.load(tmp_path / "m", variant="fp32")
    assert enc.dims == 32 and enc.max_tokens == 256
    ids = enc.tokenize(xq.probe_texts()[:6])
    full = xq.torch_reference(torch_model, ids, None)
    want = full[:, :32] / np.linalg.norm(full[:, :32], axis=1, keepdims=True)
    assert _cos(enc.embed_ids(ids), want).min() >= 0.9999

    bad = parser.parse_args(["export-onnx", str(tiny), "--out", str(tmp_path / "x"), "--dims", str(HIDDEN + 1)])
    from vien_tools.cli.main import CliError

    with pytest.raises(CliError, match="out of range"):
        bad.fn(bad)


def test_missing_torch_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(xq.ExportError, match=re.escape("pip install torch==2.13.0 transformers")):
        xq.require_torch()


def test_shipped_qwen3_profile_is_opt_in_and_well_formed():
    default = load_config(CONFIG_DIR / "profiles.yaml")
    assert not any("qwen3" in n for n in [*default.profiles, *default.encoders]), \
        "the default stack must start with only the e5 model present"
    cfg = load_config(CONFIG_DIR / "profiles-qwen3.yaml")
    p = cfg.profiles["qwen3-0.6b"]
    assert "qwen3-0.6b" not in [cfg.routing.default, *cfg.routing.languages.values()]
    assert p.prompt("query", "giá vé") == f"Instruct: {xq.DEFAULT_TASK}\nQuery:giá vé"
    assert p.prompt("document", "Hà Nội") == "Hà Nội"
    assert (p.pooling, p.dims, p.mrl, p.min_dims) == ("last_token", 1024, True, 32)
    assert p.check_dims(32) == 32 and p.check_dims(256) == 256
    q, d = cfg.encoders[p.query_encoder], cfg.encoders[p.document_encoder]
    assert q.backend == "onnx" and q.variant == "fp32"
    assert d.backend == "openai" and d.send_dimensions and d.server_prompt == "{text}" and d.base_url
    assert cfg.profiles["e5-small"] == default.profiles["e5-small"]


def test_pooled_token_is_endoftext_and_is_not_appended_twice(tmp_path):
    """Qwen3-Embedding's tokenizer.json already appends <|endoftext|> (kept as is); its tokenizer_config.json
    names the chat model's <|im_end|> as eos_token, which must not become the pooled token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<unk>": 0, EOS: 1, "<|im_end|>": 2, "probe": 3, "hello": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single=f"$A:0 {EOS}:0", special_tokens=[(EOS, 1)])
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}), encoding="utf-8")
    cfg = argparse.Namespace(eos_token_id=2)
    t, eos, eos_id, added = xq.prepare_tokenizer(tmp_path, cfg)
    assert (eos, eos_id, added) == (EOS, 1, False)
    assert t.encode("hello probe").ids == [4, 3, 1]
