"""`LexicalEncoder`: text -> sparse BM25 term weights.

Documents: w(t) = tf·(k1+1) / (tf + k1·(1 − b + b·len/avglen)), len = the document's word count and
avglen a configured constant (weights are stored at ingest, so the corpus average cannot be known
then; measured to matter little, see the profile docs). Queries: one weight per distinct term
(words 1, folded forms `fold_weight`, bigrams `bigram_weight`). The engine multiplies by IDF at query
time (the "lexical" sparse vector carries the IDF modifier), which completes BM25.
"""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

from vien.lexical.terms import BIGRAM, FOLDED, WORD, term, term_id
from vien.lexical.tokens import fold, stem, words
from vien.runtime.config import LexicalConfig
from vien.store.base import SparseVector


class LexicalEncoder:
    def __init__(self, config: LexicalConfig | None = None) -> None:
        self.config = config or LexicalConfig()

    def terms(self, text: str, unaccented_query: bool = False) -> tuple[Counter[str], int]:
        """Term frequencies of `text` and its length in words. Bigrams join folded forms, so one bigram
        term serves accented and unaccented text alike (the word terms keep the accents' precision)."""
        c = self.config
        ws = [stem(w) for w in words(text)] if c.stem else words(text)
        folded = [fold(w) for w in ws] if c.fold or c.bigrams else ws
        tf: Counter[str] = Counter()
        if not unaccented_query:
            tf.update(term(WORD, w) for w in ws)
        if c.fold:
            tf.update(term(FOLDED, f) for f in folded)
        if c.bigrams:
            tf.update(term(BIGRAM, f"{a} {b}") for a, b in pairwise(folded))
        return tf, len(ws)

    def document(self, text: str) -> SparseVector:
        c = self.config
        tf, n = self.terms(text)
        norm = c.k1 * (1.0 - c.b + c.b * n / c.avg_doc_terms)
        return _vector({t: f * (c.k1 + 1.0) / (f + norm) for t, f in tf.items()})

    def query(self, text: str) -> SparseVector:
        """Query weights. A query typed entirely without diacritics (an English one, or Vietnamese typed
        without accents) is matched on folded terms only, at full weight: its bare words would otherwise
        match the unaccented syllables of other Vietnamese words (also when the router restored its accents
        for the dense side: adding the restored words as terms measured worse, docs/quality.md §4)."""
        c = self.config
        unaccented = c.fold and all(fold(w) == w for w in words(text))
        kind_weight = {WORD: 1.0, FOLDED: 1.0 if unaccented else c.fold_weight, BIGRAM: c.bigram_weight}
        tf, _ = self.terms(text, unaccented_query=unaccented)
        return _vector({t: kind_weight[t[0]] for t in tf if kind_weight[t[0]] > 0})


def _vector(weights: dict[str, float]) -> SparseVector:
    # Sum on the (astronomically rare) 32-bit id collision instead of failing on duplicate indices.
    by_id: dict[int, float] = {}
    for t, w in weights.items():
        i = term_id(t)
        by_id[i] = by_id.get(i, 0.0) + w
    ids = sorted(by_id)
    return SparseVector(ids, [by_id[i] for i in ids])
