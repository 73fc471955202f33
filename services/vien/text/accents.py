"""Accent restoration for Vietnamese typed without diacritics: "gia ve may bay di da nang" -> "giá vé máy bay đi
Đà Nẵng".

Each plain-ASCII token that is a Vietnamese syllable ("ma") can stand for several accented syllables (ma, má, mà,
mã, mạ, mả: `vien.text.syllables`); the most likely sequence is found by Viterbi over a smoothed syllable bigram
model, so context decides ("ma" in "bóng ma" vs "má" in "ba má"):

    P(w | v) = max(c(v w) − D, 0) / c(v) + D·N1+(v)/c(v) · P1(w)    bigram, interpolated absolute discounting
    P1(w)    = (c(w) + μ·P0(w)) / (N + μ)                          unigram, smoothed towards a general prior P0

(N1+(v): how many distinct syllables follow v, so a context seen with many different followers, such as "là",
backs off more to the unigram than one seen with few.)

c(·) are `SyllableCounts` from documents (ingest keeps a tenant's up to date; the evaluation counts its corpus);
P0 is a general prior over accented syllables: the unigram probabilities of the XLM-R SentencePiece pieces that
multilingual-e5-small ships (`build_prior`), whose plain-ASCII forms are discounted because those pieces also
stand for words of other languages ("la", "de", "ma"). With no counts and no prior there is nothing to go on:
`restore` returns the text unchanged with reason "no_statistics".

What is never altered: text that has any diacritic already (partially accented text is the user's own choice),
tokens that are not Vietnamese syllables (English words, names, codes, numbers, URLs, e-mail addresses, emoji,
tokens with digits or inner punctuation), acronyms in capitals. Case is kept ("Da Nang" -> "Đà Nẵng").

Pure Python, no I/O on the hot path; a model is immutable once built, so it is safe to share between threads.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import pairwise
from pathlib import Path

from vien.text.syllables import ACCENTED_SYLLABLES, FOLDED_SYLLABLES, accented_forms

PRIOR_FILE = "vi-syllable-prior.v1.json"
PRIOR_VERSION = 1  # bump when build_prior changes: a cached prior of another version is rebuilt
PRIOR_SOURCE = "multilingual-e5-small/tokenizer.json"
START, END = "<s>", "</s>"  # a run of syllables starts / ends (text edge, punctuation, another word)
# A chunk between spaces: optional opening punctuation, the letters, optional closing punctuation.
_CHUNK = re.compile(r"\S+")
_TOKEN = re.compile(r"([\"'(\[{«“‘]*)([A-Za-z]+)([.,!?;:\"')\]}»”’…]*)")
# Documents: letter runs (syllables or other words); anything else between them breaks the context.
_DOC_TOKEN = re.compile(r"[^\W\d_]+|[^\w\s]+|\d+")
_FOREIGN = "foreign"
MAX_RESTORE_CHARS = 2000          # longer texts are left alone (a query, not a document)
MU, DISCOUNT = 100.0, 0.75        # prior strength of the unigram; absolute discount of the bigram counts (tuned
#                                   on held-out text of the eval corpora, not on the eval queries)
ASCII_PRIOR_DISCOUNT = 0.02       # × P0 of a plain-ASCII form (its XLM-R piece is shared with other languages)


# --------------------------------------------------------------------------------------------------
# Counts
# --------------------------------------------------------------------------------------------------
def syllable_runs(text: str) -> Iterator[list[str]]:
    """Runs of consecutive Vietnamese syllables of `text` (lower case, NFC); punctuation, digits and
    non-syllable words end a run."""
    run: list[str] = []
    for tok in _DOC_TOKEN.findall(unicodedata.normalize("NFC", text).lower()):
        if tok in ACCENTED_SYLLABLES:
            run.append(tok)
        else:
            if run:
                yield run
            run = []
    if run:
        yield run


@dataclass
class SyllableCounts:
    """Unigram and bigram counts of accented syllables (bigrams keyed "v w"; "<s> w" for a run's first)."""

    unigrams: Counter[str] = field(default_factory=Counter)
    bigrams: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.unigrams.values())

    def add_text(self, text: str) -> None:
        for run in syllable_runs(text):
            self.unigrams.update(run)
            self.bigrams[f"{START} {run[0]}"] += 1
            self.bigrams[f"{run[-1]} {END}"] += 1
            self.bigrams.update(f"{a} {b}" for a, b in pairwise(run))

    def add_texts(self, texts: Iterable[str]) -> SyllableCounts:
        for t in texts:
            self.add_text(t)
        return self

    def update(self, other: SyllableCounts) -> None:
        self.unigrams.update(other.unigrams)
        self.bigrams.update(other.bigrams)

    def fields(self) -> dict[str, int]:
        """Flat form for a Redis hash: "u:w" and "b:v w" -> count."""
        out = {f"u:{w}": n for w, n in self.unigrams.items()}
        out.update({f"b:{k}": n for k, n in self.bigrams.items()})
        return out

    @classmethod
    def from_fields(cls, fields: dict[str, int]) -> SyllableCounts:
        c = cls()
        for k, n in fields.items():
            if k.startswith("u:"):
                c.unigrams[k[2:]] = n
            elif k.startswith("b:"):
                c.bigrams[k[2:]] = n
        return c


# --------------------------------------------------------------------------------------------------
# The general prior
# --------------------------------------------------------------------------------------------------
def build_prior(tokenizer_json: Path) -> dict[str, float]:
    """P0 over accented syllables from a SentencePiece Unigram vocabulary (tokenizer.json): the word-initial
    pieces that are Vietnamese syllables, case merged, plain-ASCII forms × ASCII_PRIOR_DISCOUNT, normalised."""
    vocab = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["vocab"]
    p: dict[str, float] = {}
    for piece, logp in vocab:
        if not piece.startswith("▁"):
            continue
        w = unicodedata.normalize("NFC", piece[1:]).lower()
        if w in ACCENTED_SYLLABLES:
            p[w] = p.get(w, 0.0) + math.exp(logp) * (ASCII_PRIOR_DISCOUNT if w.isascii() else 1.0)
    total = sum(p.values()) or 1.0
    return {w: v / total for w, v in sorted(p.items())}


def load_prior(models_dir: Path) -> dict[str, float]:
    """The prior cached in `models_dir` (built from the default model's tokenizer on first use); {} when
    the default model is not built."""
    cached = models_dir / PRIOR_FILE
    stamp = {"version": PRIOR_VERSION, "ascii_discount": ASCII_PRIOR_DISCOUNT, "inventory": len(ACCENTED_SYLLABLES)}
    if cached.exists():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            data = json.loads(cached.read_text(encoding="utf-8"))
            if data["built_with"] == stamp:
                return {str(k): float(v) for k, v in data["prior"].items()}
    source = models_dir / PRIOR_SOURCE
    if not source.exists():
        return {}
    prior = build_prior(source)
    tmp = cached.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"built_with": stamp, "prior": prior}, ensure_ascii=False), encoding="utf-8")
    tmp.replace(cached)
    return prior


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Restoration:
    text: str            # the restored text (== the input when nothing was restored)
    restored: bool       # at least one syllable changed
    confidence: float    # mean posterior probability of the chosen form per restored-eligible syllable
    syllables: int       # tokens that were candidates for restoration
    reason: str = ""     # why nothing was done: "accented", "no_syllables", "too_long", "no_statistics"


class AccentModel:
    """Immutable scorer: a prior P0 and document counts. Build a new one when the counts change."""

    def __init__(self, prior: dict[str, float] | None = None, counts: SyllableCounts | None = None,
                 mu: float = MU, discount: float = DISCOUNT, max_candidates: int = 8, min_ratio: float = 1e-3) -> None:
        self.prior = prior or {}
        self.counts = counts or SyllableCounts()
        self.mu, self.discount = mu, discount
        self.max_candidates, self.min_ratio = max_candidates, min_ratio
        self._n = self.counts.total
        self._floor = min(self.prior.values(), default=1e-7) * 0.1
        # c(v w) by context v
        self._next: dict[str, dict[str, int]] = {}
        for k, n in self.counts.bigrams.items():
            v, w = k.split(" ", 1)
            self._next.setdefault(v, {})[w] = n
        # per context v: 1 / c(v) and the back-off weight D · N1+(v) / c(v) (distinct followers of v)
        self._ctx: dict[str, tuple[float, float]] = {}
        for v, nx in self._next.items():
            cv = sum(nx.values())
            self._ctx[v] = (1.0 / cv, discount * len(nx) / cv)
        runs = sum(self._next.get(START, {}).values())
        self._p_end = runs / (self._n + runs) if runs else 0.0  # P1 of the end of a run
        self.has_counts = self._n > 0
        self.empty = not self.prior and not self._n
        self._candidates = lru_cache(maxsize=20_000)(self._candidates_uncached)

    def p1(self, w: str) -> float:
        """The unigram probability P1(w)."""
        c = self.counts.unigrams.get(w, 0)
        if not self.prior:  # counts alone: a tiny uniform floor so unseen forms stay possible
            return (c + 1e-3) / (self._n + 1e-3 * 16)
        return (c + self.mu * self.prior.get(w, self._floor)) / (self._n + self.mu)

    def _candidates_uncached(self, folded: str) -> tuple[tuple[str, float], ...]:
        forms = [(w, self.p1(w)) for w in accented_forms(folded)]
        forms.sort(key=lambda x: (-x[1], x[0]))
        top = forms[0][1] if forms else 0.0
        return tuple((w, p) for w, p in forms[:self.max_candidates] if p >= top * self.min_ratio)

    def candidates(self, folded: str) -> tuple[tuple[str, float], ...]:
        """(accented form, P1) of a folded syllable, most likely first: at most `max_candidates`, and none
        less likely than `min_ratio` × the most likely."""
        return self._candidates(folded)

    def _transitions(self, prev: str, cands: tuple[tuple[str, float], ...]) -> list[float]:
        """log P(w | prev) for each candidate w (interpolated absolute discounting)."""
        nx = self._next.get(prev)
        if nx is None:  # never seen as a context: P(w | prev) = P1(w)
            return [math.log(p) for _, p in cands]
        inv, backoff = self._ctx[prev]
        d = self.discount
        return [math.log(max(nx.get(w, 0) - d, 0.0) * inv + backoff * p) for w, p in cands]

    def _transitions_end(self, cands: tuple[tuple[str, float], ...]) -> list[float]:
        """log P(</s> | w) for each candidate w."""
        out = []
        for w, _ in cands:
            nx = self._next.get(w)
            if nx is None:
                out.append(math.log(self._p_end))
            else:
                inv, backoff = self._ctx[w]
                out.append(math.log(max(nx.get(END, 0) - self.discount, 0.0) * inv + backoff * self._p_end))
        return out

    def transition(self, prev: str, w: str) -> float:
        """log P(w | prev)."""
        return self._transitions(prev, ((w, self.p1(w)),))[0]

    def decode(self, run: list[str]) -> tuple[list[str], list[float]]:
        """Best accented forms of a run of folded syllables (lower case) and each one's posterior probability
        (Viterbi for the path, forward-backward for the posteriors)."""
        lattice = [self.candidates(f) for f in run]
        n = len(lattice)
        first = self._transitions(START, lattice[0])
        best, fwd = [first], [first]
        back: list[list[int]] = [[0] * len(first)]
        trans: list[list[list[float]]] = [[first]]  # trans[i][j][k]: candidate j at i-1 -> k at i
        for i in range(1, n):
            prev, cands = lattice[i - 1], lattice[i]
            t = [self._transitions(pw, cands) for pw, _ in prev]
            trans.append(t)
            pb, pf = best[-1], fwd[-1]
            b_row, bk_row, f_row = [], [], []
            for k in range(len(cands)):
                col = [pb[j] + t[j][k] for j in range(len(prev))]
                j_best = max(range(len(prev)), key=col.__getitem__)
                b_row.append(col[j_best])
                bk_row.append(j_best)
                f_row.append(_logsumexp([pf[j] + t[j][k] for j in range(len(prev))]))
            best.append(b_row)
            back.append(bk_row)
            fwd.append(f_row)
        bwd: list[list[float]] = [[0.0] * len(c) for c in lattice]
        if self._p_end > 0:  # how likely each last candidate ends a run
            bwd[-1] = self._transitions_end(lattice[-1])
            best[-1] = [b + e for b, e in zip(best[-1], bwd[-1], strict=True)]
        for i in range(n - 2, -1, -1):
            t, nb = trans[i + 1], bwd[i + 1]
            bwd[i] = [_logsumexp([tj[k] + nb[k] for k in range(len(nb))]) for tj in t]
        z = _logsumexp([f + e for f, e in zip(fwd[-1], bwd[-1], strict=True)])
        k = max(range(len(lattice[-1])), key=best[-1].__getitem__)
        path = [0] * n
        for i in range(n - 1, -1, -1):
            path[i] = k
            k = back[i][k]
        words = [lattice[i][path[i]][0] for i in range(n)]
        post = [min(1.0, math.exp(fwd[i][path[i]] + bwd[i][path[i]] - z)) for i in range(n)]
        return words, post


def _logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def has_diacritics(text: str) -> bool:
    return any(c.isalpha() and not c.isascii() for c in text)


def _apply(token: str, accented: str) -> str:
    """`accented` with the case of `token` (they fold to the same letters, one to one)."""
    return "".join(a.upper() if t.isupper() else a for t, a in zip(token, accented, strict=True))


def restore(text: str, model: AccentModel, keep_lone: Callable[[str], bool] | None = None) -> Restoration:
    """The most likely accented form of `text` (Vietnamese typed without diacritics), see the module doc.
    `keep_lone(word)`: whether a syllable standing alone beside a foreign word is a word of that other language
    ("top laptop", "ram laptop"), then left as typed; None keeps none (Vietnamese words between names, as
    in "Paris va London", are restored)."""
    if has_diacritics(text):
        return Restoration(text, False, 0.0, 0, "accented")
    if len(text) > MAX_RESTORE_CHARS:
        return Restoration(text, False, 0.0, 0, "too_long")
    all_upper = text.isupper()
    # (start, end, letters) of each restorable token; None breaks a run, FOREIGN too (a word that is not a
    # Vietnamese syllable, or an acronym)
    slots: list[tuple[int, int, str] | str | None] = []
    for m in _CHUNK.finditer(text):
        tm = _TOKEN.fullmatch(m.group())
        if tm is None:
            chunk = m.group()
            slots.append(_FOREIGN if any(c.isalpha() for c in chunk) and not any(c.isdigit() for c in chunk)
                         else None)
            continue
        core = tm.group(2)
        low = core.lower()
        if low not in FOLDED_SYLLABLES or (len(core) > 1 and core.isupper() and not all_upper):
            slots.append(_FOREIGN)
            continue
        if tm.group(1):
            slots.append(None)
        start = m.start() + len(tm.group(1))
        slots.append((start, start + len(core), core))
        if tm.group(3):
            slots.append(None)
    n_syll = sum(isinstance(s, tuple) for s in slots)
    if not n_syll:
        return Restoration(text, False, 0.0, 0, "no_syllables")
    if model.empty:
        return Restoration(text, False, 0.0, n_syll, "no_statistics")
    # Runs of consecutive syllables; a lone one beside a foreign word is left as typed when `keep_lone` says it
    # belongs to the other language (without a Vietnamese neighbour there is no context to restore it by).
    runs: list[list[tuple[int, int, str]]] = []
    run: list[tuple[int, int, str]] = []
    before: str | None = None
    for s in [*slots, None]:
        if isinstance(s, tuple):
            run.append(s)
            continue
        if run and not (len(run) == 1 and keep_lone is not None and _FOREIGN in (before, s) and keep_lone(run[0][2])):
            runs.append(run)
        run, before = [], s
    out, pos, posts = [], 0, []
    for run in runs:
        words, post = model.decode([core.lower() for _, _, core in run])
        posts += post
        for (start, end, core), w in zip(run, words, strict=True):
            out.append(text[pos:start])
            out.append(_apply(core, w))
            pos = end
    out.append(text[pos:])
    restored = "".join(out)
    confidence = round(sum(posts) / len(posts), 4) if posts else 0.0
    return Restoration(restored, restored != text, confidence, n_syll)


def syllable_accuracy(truth: str, restored: str) -> tuple[int, int]:
    """(syllables, syllables restored right) of `restored` against the accented original `truth`: over the
    whitespace-separated tokens of `truth` that carry a diacritic or are Vietnamese syllables, compared case-
    insensitively after NFC; a token count mismatch counts every such token wrong."""
    t = unicodedata.normalize("NFC", truth).split()
    r = unicodedata.normalize("NFC", restored).split()
    judged = [i for i, w in enumerate(t) if has_diacritics(w) or w.strip(".,!?;:\"'()").lower() in FOLDED_SYLLABLES]
    if len(t) != len(r):
        return len(judged), 0
    return len(judged), sum(t[i].lower() == r[i].lower() for i in judged)
