"""A small Qwen3-architecture embedding model with random weights, for tests and local runs of the Qwen3
profile (no model hub here): the real structure (grouped-query attention, q/k norms, RoPE, several layers,
head_dim 64, which vLLM's CPU attention accepts) and a byte-level BPE tokenizer trained on the probe texts and
the sample documents, with ``<|endoftext|>`` as the pooled end token as in Qwen3-Embedding.

Build-time only (needs the `export` extra: torch, transformers).

    python -m vien_tools.build.tiny_qwen3 --out DIR [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EOS = "<|endoftext|>"
HIDDEN = 128
HEAD_DIM = 64


def _training_texts() -> list[str]:
    from importlib import resources

    from vien_tools.build import export_qwen3 as xq

    texts = [*xq.probe_texts(), *xq.PROBE_QUERIES]
    for line in (resources.files("vien.samples") / "documents.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            event = json.loads(line)
            texts.extend(str(event.get(k, "")) for k in ("title", "text"))
    return [xq.prepare_text(t) for t in texts if t]


def build_tokenizer(vocab_size: int = 2000):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_training_texts(), trainer)
    # as Qwen3-Embedding's own tokenizer.json: every encoding ends with the pooled <|endoftext|>
    tok.post_processor = processors.TemplateProcessing(single=f"$A:0 {EOS}:0", pair=f"$A:0 $B:1 {EOS}:1",
                                                       special_tokens=[(EOS, tok.token_to_id(EOS))])
    return tok


def build_tiny_qwen3(out_dir: Path, seed: int = 0, layers: int = 4) -> Path:
    """Write config.json, model.safetensors, tokenizer.json and tokenizer_config.json into ``out_dir``."""
    import torch
    from transformers import Qwen3Config, Qwen3Model

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    tok.save(str(out_dir / "tokenizer.json"))
    eos_id = tok.token_to_id(EOS)
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 32768, "eos_token": EOS,
        "pad_token": EOS, "padding_side": "left"}, indent=2))
    cfg = Qwen3Config(vocab_size=tok.get_vocab_size(), hidden_size=HIDDEN, intermediate_size=4 * HIDDEN,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=HEAD_DIM,
                      max_position_embeddings=4096, eos_token_id=eos_id, bos_token_id=eos_id,
                      pad_token_id=eos_id, tie_word_embeddings=True,
                      torch_dtype="float32")  # type: ignore[call-arg]  # passed through to PretrainedConfig
    torch.manual_seed(seed)
    Qwen3Model(cfg).eval().save_pretrained(str(out_dir))
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(build_tiny_qwen3(a.out, seed=a.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
