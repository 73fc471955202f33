"""Vietnamese syllables: onsets × rhymes with the spelling rules, in folded (unaccented) and accented form.

Pure functions over constant tables; the sets are built once at import. Used by the router's language id
(is this plain-ASCII token a Vietnamese syllable?) and by accent restoration (which accented syllables
can a folded one stand for?).
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

ONSETS = ("", "b", "c", "ch", "d", "đ", "g", "gh", "gi", "h", "k", "kh", "l", "m", "n", "ng", "ngh", "nh", "ph",
          "qu", "r", "s", "t", "th", "tr", "v", "x")
RHYMES = tuple("""a ai ao au ay âu ây e eo ê êu i ia iu iêu o oi ô ôi ơ ơi u ua ui uôi ư ưa ưi ưu ươi ươu y yêu
oa oai oay oe oeo uê uy uya uây uyu uơ
ac ach am an ang anh ap at ăc ăm ăn ăng ăp ăt âc âm ân âng âp ât ec em en eng ep et êch êm ên ênh êp êt
ich im in inh ip it oc om on ong op ot ooc oong ôc ôm ôn ông ôp ôt ơm ơn ơp ơt uc um un ung up ut
ưc ưng ưt ưm ưn iêc iêm iên iêng iêp iêt yêm yên yêng yêt uôc uôm uôn uông uôt ươc ươm ươn ương ươp ươt
oac oach oan oang oanh oap oat oăc oăm oăn oăng oăt oen oet oem uân uâng uât uêch uênh uych uyn uynh uyp
uyt uyên uyêt""".split())
_FRONT = frozenset("eêiy")
_MEDIAL = ("oa", "oă", "oe", "uâ", "uê", "uy", "uơ")
_VOWELS = frozenset("aăâeêioôơuưy")
_MARKED = frozenset("ăâêôơư")
# The five tone marks as combining characters (the sixth tone, ngang, has none).
TONE_MARKS = ("\u0300", "\u0301", "\u0309", "\u0303", "\u0323")
_ACUTE, _DOT = "\u0301", "\u0323"
FOLD = str.maketrans({
    **{c: "a" for c in "àáâãạảấầẩẫậăắằẳẵặ"}, **{c: "e" for c in "èéêẹẻẽếềểễệ"}, **{c: "i" for c in "ìíĩỉị"},
    **{c: "o" for c in "òóôõọỏốồổỗộơớờởỡợ"}, **{c: "u" for c in "ùúũụủưứừửữự"}, **{c: "y" for c in "ýỳỵỷỹ"},
    "đ": "d",
    **{c: "A" for c in "ÀÁÂÃẠẢẤẦẨẪẬĂẮẰẲẴẶ"}, **{c: "E" for c in "ÈÉÊẸẺẼẾỀỂỄỆ"}, **{c: "I" for c in "ÌÍĨỈỊ"},
    **{c: "O" for c in "ÒÓÔÕỌỎỐỒỔỖỘƠỚỜỞỠỢ"}, **{c: "U" for c in "ÙÚŨỤỦƯỨỪỬỮỰ"}, **{c: "Y" for c in "ÝỲỴỶỸ"},
    "Đ": "D",
})


def rhyme_ok(onset: str, rhyme: str) -> bool:
    """Whether onset + rhyme is spelled as Vietnamese spells it (c/k/q, g/gh, ng/ngh, gi, labials)."""
    f = rhyme[0]
    if rhyme.startswith("yê") and onset and onset != "qu":
        return False  # "yê" stands alone (yên, yêu) or after qu (quyên, quyết); after other onsets it is "iê"
    if onset == "c" and (f in _FRONT or rhyme.startswith(_MEDIAL)):
        return False  # k before e/ê/i/y, qu for the labialised onset
    if onset == "k" and f not in _FRONT:
        return False
    if onset in ("g", "ng") and f in "eê":
        return False  # gh / ngh before e, ê
    if onset == "ng" and f == "i":
        return False
    if onset in ("gh", "ngh") and f not in "eêi":
        return False
    if onset == "qu" and (f in "uư" or rhyme.startswith(("oa", "oe", "oă"))):
        return False
    if onset == "gi" and f == "i":
        return False
    # no medial o/u after labials
    return not (onset in ("b", "m", "ph", "v") and rhyme.startswith(_MEDIAL))


def _tone_positions(rhyme: str) -> list[int]:
    """Where a tone mark goes in `rhyme` (two places for open oa/oe/uy: "hòa" and "hoà" are both written)."""
    marked = [i for i, c in enumerate(rhyme) if c in _MARKED]
    if marked:
        return [marked[-1]]  # ươ -> ơ, uâ -> â, iê -> ê
    vowels = [i for i, c in enumerate(rhyme) if c in _VOWELS]
    if rhyme[-1] not in _VOWELS or len(vowels) == 1:
        return [vowels[-1]]
    if len(vowels) == 3:
        return [vowels[1]]
    if rhyme in ("oa", "oe", "uy"):
        return [0, 1]
    return [vowels[0]]


def _checked(rhyme: str) -> bool:
    """A rhyme ending in p, t, c or ch takes only the sắc or nặng tone."""
    return rhyme.endswith(("p", "t", "c", "ch"))


def _with_tone(onset: str, rhyme: str, tone: str, pos: int) -> str:
    s = rhyme[:pos + 1] + tone + rhyme[pos + 1:]
    return unicodedata.normalize("NFC", onset + s)


def _build() -> tuple[frozenset[str], dict[str, tuple[str, ...]]]:
    accented: dict[str, set[str]] = {}
    for o in ONSETS:
        for r in RHYMES:
            if not rhyme_ok(o.replace("đ", "d"), r):
                continue
            forms = {unicodedata.normalize("NFC", o + r)}
            tones = (_ACUTE, _DOT) if _checked(r) else TONE_MARKS
            if _checked(r):
                forms.clear()
            for pos in _tone_positions(r):
                forms.update(_with_tone(o, r, t, pos) for t in tones)
            for f in forms:
                accented.setdefault(f.translate(FOLD), set()).add(f)
    for loan in ("pin", "pa", "pi"):  # the few loan syllables with a bare p
        accented.setdefault(loan, set()).add(loan)
    folded = frozenset(accented)
    return folded, {k: tuple(sorted(v)) for k, v in accented.items()}


FOLDED_SYLLABLES, _ACCENTED = _build()
ACCENTED_SYLLABLES = frozenset(f for forms in _ACCENTED.values() for f in forms)


def accented_forms(folded: str) -> tuple[str, ...]:
    """Every well-formed accented syllable whose folded form is `folded` (lower case); () if none."""
    return _ACCENTED.get(folded, ())


@lru_cache(maxsize=100_000)
def fold_syllable(word: str) -> str:
    """`word` without tone and vowel marks (đ -> d), case kept: "Đà" -> "Da"."""
    return unicodedata.normalize("NFC", word).translate(FOLD)
