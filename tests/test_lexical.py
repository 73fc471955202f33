"""vien.lexical: tokenisation, stable term ids, BM25 weights, and the fusion functions of search."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import unicodedata

import pytest

from vien.lexical import LexicalEncoder, fold, term_id, words
from vien.lexical.terms import FOLDED, WORD, term
from vien.lexical.tokens import stem
from vien.runtime.config import LexicalConfig
from vien.store.base import Hit
from vien_search import fusion

PLAIN = LexicalConfig(fold=False, bigrams=False, stem=False)


def weights(sv) -> dict[int, float]:
    return dict(zip(sv.indices, sv.values, strict=True))


# --------------------------------------------------------------------------------------- tokenisation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Kinh tế Việt Nam năm 2024!", ["kinh", "tế", "việt", "nam", "năm", "2024"]),
        ("ĐÀ NẴNG, Hà Nội; TP.HCM", ["đà", "nẵng", "hà", "nội", "tp", "hcm"]),
        ("Tôi dùng Python 3.12 (pip install)", ["tôi", "dùng", "python", "3", "12", "pip", "install"]),
        ("snake_case e-mail don't", ["snake", "case", "e", "mail", "don", "t"]),
        ("", []),
        ("  ...!? — «»  ", []),
    ],
)
def test_words(text: str, expected: list[str]) -> None:
    assert words(text) == expected


def test_decomposed_input_tokenises_like_composed() -> None:
    text = "Nguyễn Thị Hường ở Quảng Ngãi"
    nfd = unicodedata.normalize("NFD", text)
    assert nfd != text and words(nfd) == words(text) == ["nguyễn", "thị", "hường", "ở", "quảng", "ngãi"]


@pytest.mark.parametrize(("word", "folded"), [("đường", "duong"), ("nguyễn", "nguyen"), ("ưỡng", "uong"),
                                               ("hello", "hello"), ("café", "cafe"), ("2024", "2024")])
def test_fold_strips_diacritics_and_d_bar(word: str, folded: str) -> None:
    assert fold(word) == folded


def test_stem_touches_ascii_words_only() -> None:
    assert [stem(w) for w in ("running", "passports", "renewing")] == ["run", "passport", "renew"]
    assert stem("tiếng") == "tiếng"


# --------------------------------------------------------------------------------------------- term ids


def test_term_ids_are_stable_32_bit_and_unsalted() -> None:
    t = term(WORD, "việt")
    expected = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=4).digest(), "little")
    assert term_id(t) == expected == 3651398482  # pinned: ids are stored in indexes, they must never change
    code = "from vien.lexical import term_id; print(term_id('w:việt'), term_id('f:viet'))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert outs == {f"{expected} {term_id('f:viet')}\n"}
    assert term_id(term(WORD, "viet")) != term_id(term(FOLDED, "viet"))  # namespaces keep kinds apart


# ------------------------------------------------------------------------------------------ BM25 maths


def test_document_weights_match_hand_computed_bm25() -> None:
    enc = LexicalEncoder(PLAIN.model_copy(update={"k1": 1.2, "b": 0.75, "avg_doc_terms": 4.0}))
    sv = enc.document("a a b")
    # len 3, avglen 4: norm = 1.2 * (1 - 0.75 + 0.75 * 3/4) = 0.975
    # w(a) = 2 * 2.2 / (2 + 0.975) = 1.4789916;  w(b) = 1 * 2.2 / (1 + 0.975) = 1.1139241
    w = weights(sv)
    assert set(w) == {term_id("w:a"), term_id("w:b")}
    assert w[term_id("w:a")] == pytest.approx(1.4789916, rel=1e-6)
    assert w[term_id("w:b")] == pytest.approx(1.1139241, rel=1e-6)
    assert sv.indices == sorted(sv.indices)
    # b = 0: no length normalisation, so a longer document gives the same weight to one occurrence
    flat = LexicalEncoder(PLAIN.model_copy(update={"b": 0.0}))
    assert weights(flat.document("b"))[term_id("w:b")] == pytest.approx(
        weights(flat.document("b c d e f g"))[term_id("w:b")])
    assert LexicalEncoder().document("...").indices == []


def test_document_terms_include_folded_forms_and_folded_bigrams() -> None:
    enc = LexicalEncoder(LexicalConfig(stem=False))
    ids = set(weights(enc.document("Kinh tế")))
    assert ids == {term_id(t) for t in ("w:kinh", "w:tế", "f:kinh", "f:te", "b:kinh te")}


def test_query_weights() -> None:
    enc = LexicalEncoder(LexicalConfig(stem=False, fold_weight=0.1, bigram_weight=0.3))
    assert weights(enc.query("kinh tế kinh")) == pytest.approx({
        term_id("w:kinh"): 1.0, term_id("w:tế"): 1.0, term_id("f:kinh"): 0.1, term_id("f:te"): 0.1,
        term_id("b:kinh te"): 0.3, term_id("b:te kinh"): 0.3})
    # typed without any diacritics: folded terms at full weight, no bare-word terms
    assert weights(enc.query("kinh te")) == pytest.approx({
        term_id("f:kinh"): 1.0, term_id("f:te"): 1.0, term_id("b:kinh te"): 0.3})
    assert weights(LexicalEncoder(PLAIN).query("a b b")) == {term_id("w:a"): 1.0, term_id("w:b"): 1.0}


def test_unaccented_query_shares_terms_with_accented_document_only_when_folding() -> None:
    doc = "Phở bò Hà Nội ninh xương"
    for cfg, overlaps in ((LexicalConfig(), True), (LexicalConfig(fold=False, bigrams=False), False)):
        enc = LexicalEncoder(cfg)
        assert bool(set(enc.query("pho bo ha noi").indices) & set(enc.document(doc).indices)) is overlaps


# ---------------------------------------------------------------------------------------------- fusion


def hits(*ids_scores: tuple[str, float]) -> list[Hit]:
    return [Hit(i, s, {"doc_id": i}) for i, s in ids_scores]


DENSE = hits(("a", 0.90), ("b", 0.85), ("c", 0.80))
SPARSE = hits(("c", 12.0), ("d", 6.0), ("a", 3.0))


def test_rrf_hand_computed_and_weighted() -> None:
    out = fusion.rrf([(DENSE, 1.0), (SPARSE, 1.0)], k=1)
    # a: 1/2 + 1/4 = .75, c: 1/4 + 1/2 = .75, b: 1/3, d: 1/3; ties broken by id
    assert [(h.id, round(h.score, 4)) for h in out] == [("a", 0.75), ("c", 0.75), ("b", 0.3333), ("d", 0.3333)]
    assert [h.id for h in fusion.rrf([(DENSE, 2.0), (SPARSE, 1.0)], k=1)][:2] == ["a", "c"]
    assert [h.id for h in fusion.rrf([(DENSE, 1.0), (SPARSE, 2.0)], k=1)][:2] == ["c", "a"]
    assert [h.id for h in fusion.rrf([(DENSE, 0.0), (SPARSE, 1.0)], k=60)][:3] == ["c", "d", "a"]
    assert out[0].payload == {"doc_id": "a"}


def test_weighted_sum_of_min_max_scores() -> None:
    assert fusion.min_max(DENSE) == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0})
    assert fusion.min_max(hits(("x", 2.0))) == {"x": 1.0} and fusion.min_max([]) == {}
    out = fusion.weighted_sum([(DENSE, 1.0), (SPARSE, 1.0)])
    # a: (1 + 0)/2, c: (0 + 1)/2, b: .5/2, d: (6-3)/(12-3)/2: scores stay in [0, 1]
    assert [(h.id, round(h.score, 4)) for h in out] == [("a", 0.5), ("c", 0.5), ("b", 0.25), ("d", 0.1667)]
    assert [h.id for h in fusion.weighted_sum([(DENSE, 0.3), (SPARSE, 0.7)])] == ["c", "a", "d", "b"]
