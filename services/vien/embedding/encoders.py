"""Loading text encoders named in the profiles config, and preparing token ids for them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from vien.runtime.config import EncoderConfig, Settings
from vien.runtime.errors import InvalidArgument

BUILTIN_PREFIX = "builtin:"


class TextEncoder(Protocol):
    """What the embedders need of a local model (OnnxEncoder implements it)."""

    model_id: str
    revision: str
    dims: int
    max_tokens: int
    variant: str

    def tokenize(self, texts: list[str], max_tokens: int | None = None) -> list[list[int]]: ...

    def embed_ids(self, batch: list[list[int]]) -> np.ndarray: ...


def resolve_model_source(model: str, settings: Settings) -> str | Path:
    """`builtin:NAME` -> the directory built at setup; an existing path -> itself; else a hub repo id."""
    if model.startswith(BUILTIN_PREFIX):
        return settings.models_dir / model[len(BUILTIN_PREFIX):]
    p = Path(model).expanduser()
    if p.exists() or model.startswith(("/", "./", "../", "~")):
        return p
    return model


def load_onnx_encoder(cfg: EncoderConfig, settings: Settings) -> TextEncoder:
    from vien.models.onnx_encoder import OnnxEncoder

    source = resolve_model_source(cfg.model, settings)
    encoder: TextEncoder = OnnxEncoder.load(source, variant=cfg.variant, intra_op_threads=cfg.intra_op_threads)
    return encoder


@dataclass(frozen=True)
class PreparedText:
    ids: list[int]
    token_count: int      # tokens fed to the model (after truncation)
    truncated: bool


def prepare(
    encoder: TextEncoder,
    prompted: list[str],
    max_tokens: int,
    strict: bool,
    profile_name: str,
    field: str = "texts",
    indices: list[int] | None = None,
) -> list[PreparedText]:
    """Tokenise once without truncation, then truncate (default) or reject (strict) over-long texts.

    Truncation keeps the final special token (</s> for e5, the pooled EOS for Qwen3), so pooling
    sees the same structure as for a text that fits.
    """
    limit = min(max_tokens, encoder.max_tokens)
    out = []
    for i, ids in enumerate(encoder.tokenize(prompted, max_tokens=None)):
        n = len(ids)
        if n <= limit:
            out.append(PreparedText(ids, n, False))
            continue
        if strict:
            raise InvalidArgument(
                f"{field}[{indices[i] if indices else i}]",
                f"{n} tokens exceeds the limit of {limit} tokens of profile {profile_name!r} (strict mode)",
            )
        out.append(PreparedText([*ids[: limit - 1], ids[-1]], limit, True))
    return out
