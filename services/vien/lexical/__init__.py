"""BM25-style lexical vectors with Vietnamese-aware tokenisation, stored as the "lexical" sparse vector.

`tokens` splits text into words (Vietnamese: syllables) and folds diacritics; `terms` turns words into
namespaced terms and stable 32-bit term ids; `encoder.LexicalEncoder` weights them (BM25 saturation and
length normalisation for documents, flat weights for queries; the engine applies IDF at query time).
"""

from vien.lexical.encoder import LexicalEncoder
from vien.lexical.terms import term_id
from vien.lexical.tokens import fold, words

__all__ = ["LexicalEncoder", "fold", "term_id", "words"]
