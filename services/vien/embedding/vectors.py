"""Vector wire format and Matryoshka-style truncation."""

from __future__ import annotations

import numpy as np

_F32LE = np.dtype("<f4")


def pack(vec: np.ndarray) -> bytes:
    """Packed little-endian float32, the wire format of every vien vector."""
    return np.ascontiguousarray(vec, dtype=_F32LE).tobytes()


def unpack(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=_F32LE)


def truncate(vectors: np.ndarray, dims: int) -> np.ndarray:
    """Keep the first `dims` components and re-normalise to unit length (MRL truncation)."""
    if dims >= vectors.shape[-1]:
        return vectors
    cut = vectors[..., :dims]
    norms = np.linalg.norm(cut, axis=-1, keepdims=True)
    return (cut / np.maximum(norms, 1e-12)).astype(np.float32)
