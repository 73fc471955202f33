"""Vietnamese without diacritics, as people type it on a keyboard without a Vietnamese input method."""

from __future__ import annotations

import unicodedata

# đ/Đ is a letter of its own (no combining mark to drop), so it is mapped explicitly.
_D = str.maketrans({"đ": "d", "Đ": "D"})


def strip_diacritics(text: str) -> str:
    """"Tiếng Việt có dấu, Đà Nẵng" -> "Tieng Viet co dau, Da Nang" (tone and vowel marks removed, đ -> d)."""
    decomposed = unicodedata.normalize("NFD", text.translate(_D))
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if unicodedata.category(c) != "Mn"))
