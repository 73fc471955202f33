"""Terms and their ids. A term is a namespaced string: the word itself, its diacritic-folded form, or
a bigram of adjacent words, so the three kinds never collide and each gets its own IDF in the engine."""

from __future__ import annotations

import hashlib
from functools import lru_cache

WORD = "w"
FOLDED = "f"
BIGRAM = "b"


@lru_cache(maxsize=500_000)
def term_id(term: str) -> int:
    """Stable 32-bit id of a term (blake2b, not Python's per-process salted `hash`): the same in every
    process and release, since ids are stored in the index."""
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "little")


def term(kind: str, text: str) -> str:
    return f"{kind}:{text}"
