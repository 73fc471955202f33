"""Split long documents into chunks of at most ``max_tokens`` tokens, with overlap, on natural boundaries.

``count_tokens(texts) -> counts`` is the embedding model's own measure (its tokenizer, including the
document prompt such as e5's ``"passage: "`` and the special tokens, and *without* truncation), so a
chunk that fits here is never truncated by the encoder. Every returned chunk is verified with it.

How it works (deterministic: the same inputs give the same chunks):

1. Text that fits whole is one chunk (leading/trailing whitespace trimmed).
2. Otherwise the text is cut into words (``\\S+`` plus the whitespace after it); a word that alone is
   over the limit (a URL, base64, CJK without spaces) is cut into character pieces that fit, never
   between a letter and a combining mark. After each unit a break strength is noted:
   3 paragraph (blank line), 2 sentence end (``. ! ? …`` and CJK ``。！？``, before a non-lowercase word)
   or line break, 1 clause (``, ; :``, dashes), 0 plain word.
3. From each start, the longest run of units that fits is found (word counts summed as an estimate,
   calibrated once against the whole text's count, then checked with ``count_tokens`` on the real
   span, galloping if the estimate was off); the chunk
   ends at the last paragraph break in it that keeps it at least half full, else the last sentence break
   (half full), else the last clause break (three quarters full), else the last word that fits.
4. The next chunk starts up to ``overlap_tokens`` back (counted like a chunk, less the empty-text cost):
   at a sentence start inside that window if one gives at least half the overlap, else at the earliest
   word in the window. Overlap never stops progress.

Chunk offsets are Python string indices into the original text (``text[start_char:end_char] == chunk.text``);
consecutive chunks cover every non-whitespace character.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

CountTokens = Callable[[list[str]], list[int]]


@dataclass(frozen=True)
class Chunk:
    text: str
    start_char: int
    end_char: int


_UNIT = re.compile(r"\S+\s*")
_CLOSERS = "\"'”’»)]}›"
_SENTENCE_END = ".!?…。！？"
_CLAUSE_END = ",;:，；：、"
_DASHES = {"-", "–", "—"}

PARAGRAPH, SENTENCE, CLAUSE, WORD = 3, 2, 1, 0
_MIN_FILL = {PARAGRAPH: 0.5, SENTENCE: 0.5, CLAUSE: 0.75}


def _break_after(word: str, ws: str, next_word: str | None) -> int:
    if next_word is None:
        return PARAGRAPH
    if ws.count("\n") >= 2:
        return PARAGRAPH
    if "\n" in ws:
        return SENTENCE
    core = word.rstrip(_CLOSERS)
    if core and core[-1] in _SENTENCE_END:
        first = next_word.lstrip("\"'“‘«([{‹")[:1]
        if not first or not first.islower():
            return SENTENCE
    if (core and core[-1] in _CLAUSE_END) or next_word in _DASHES:
        return CLAUSE
    return WORD


class _Counter:
    """Memoised count_tokens on spans of the text."""

    def __init__(self, text: str, count_tokens: CountTokens) -> None:
        self.text = text
        self.fn = count_tokens
        self.cache: dict[tuple[int, int], int] = {}

    def many(self, spans: list[tuple[int, int]]) -> list[int]:
        todo = [sp for sp in dict.fromkeys(spans) if sp not in self.cache]
        if todo:
            counts = self.fn([self.text[a:b] for a, b in todo])
            if len(counts) != len(todo):
                raise ValueError("count_tokens returned a different number of counts than texts")
            for sp, c in zip(todo, counts, strict=True):
                self.cache[sp] = int(c)
        return [self.cache[sp] for sp in spans]

    def one(self, a: int, b: int) -> int:
        return self.many([(a, b)])[0]


def _split_long_word(counter: _Counter, a: int, b: int, max_tokens: int) -> list[tuple[int, int, int]]:
    """Cut text[a:b] into consecutive pieces that each fit alone: [(start, end, count)]."""
    text = counter.text
    pieces: list[tuple[int, int, int]] = []
    guess = 16
    while a < b:
        if counter.one(a, b) <= max_tokens:
            pieces.append((a, b, counter.one(a, b)))
            break
        # gallop for an end that does not fit, then bisect for the longest prefix that does
        lo, hi = a + 1, min(b, a + guess)
        while hi < b and counter.one(a, hi) <= max_tokens:
            lo, hi = hi, min(b, a + 2 * (hi - a))
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if counter.one(a, mid) <= max_tokens:
                lo = mid
            else:
                hi = mid
        end = lo
        # never cut between a base letter and its combining marks (NFD Vietnamese)
        while end > a + 1 and unicodedata.combining(text[end]):
            end -= 1
        if counter.one(a, end) > max_tokens:
            raise ValueError(f"cannot fit even one character at offset {a} into max_tokens={max_tokens}")
        pieces.append((a, end, counter.one(a, end)))
        guess = max(1, end - a)
        a = end
    return pieces


def chunk_text(text: str, count_tokens: CountTokens, max_tokens: int, overlap_tokens: int = 0) -> list[Chunk]:
    """Chunks of `text`, each at most `max_tokens` by `count_tokens` (see the module notes)."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError("overlap_tokens must be >= 0 and < max_tokens")
    m = re.search(r"\S", text)
    if m is None:
        return []
    s0 = m.start()
    e0 = len(text.rstrip())
    counter = _Counter(text, count_tokens)
    total = counter.one(s0, e0)
    if total <= max_tokens:
        return [Chunk(text[s0:e0], s0, e0)]
    overhead = counter.one(0, 0)  # prompt + special tokens: what an empty text costs
    if overhead >= max_tokens:
        raise ValueError(f"max_tokens={max_tokens} leaves no room: an empty text already counts {overhead}")

    # units: (start, content_end); a unit's trailing whitespace runs to the next unit's start
    words = [(mm.start(), mm.start() + len(mm.group().rstrip())) for mm in _UNIT.finditer(text, s0, e0)]
    raw = counter.many(words)
    starts: list[int] = []
    ends: list[int] = []
    costs: list[float] = []
    breaks: list[int] = []
    for i, ((a, b), c) in enumerate(zip(words, raw, strict=True)):
        nxt = words[i + 1] if i + 1 < len(words) else None
        brk = _break_after(text[a:b], text[b:nxt[0]] if nxt else "", text[nxt[0]:nxt[1]] if nxt else None)
        pieces = [(a, b, c)] if c <= max_tokens else _split_long_word(counter, a, b, max_tokens)
        for j, (pa, pb, pc) in enumerate(pieces):
            starts.append(pa)
            ends.append(pb)
            costs.append(pc - overhead)
            breaks.append(brk if j == len(pieces) - 1 else WORD)
    n = len(starts)
    # Calibrate the estimate against the real count of the whole text: words counted alone are off by a
    # roughly constant amount each (e5's empty text already holds a lone "▁" that a word's own "▁Hà"
    # replaces, so a one-token word seems to cost 0; a character count misses the spaces between words).
    delta = (total - overhead - sum(costs)) / n
    prefix = [0.0]
    for cost in costs:
        prefix.append(prefix[-1] + max(0.0, cost + delta))
    budget = max_tokens - overhead

    def est(i: int, j: int) -> float:  # estimated content tokens of units i..j-1
        return prefix[j] - prefix[i]

    def fits(i: int, j: int) -> bool:
        return counter.one(starts[i], ends[j - 1]) <= max_tokens

    def longest_fit(s: int) -> int:
        """Largest e (s < e <= n) such that units s..e-1 fit; assumes longer spans never count fewer tokens."""
        e = max(s + 1, min(n, bisect.bisect_right(prefix, prefix[s] + budget) - 1))
        counter.many([(starts[s], ends[e - 1])] + ([(starts[s], ends[e])] if e < n else []))
        if fits(s, e):
            lo, step = e, 1
            while lo + step <= n and fits(s, lo + step):
                lo, step = lo + step, step * 2
            hi = min(lo + step, n + 1)
        else:
            hi, step = e, 1
            lo = max(s + 1, e - step)
            while lo > s + 1 and not fits(s, lo):
                hi, step = lo, step * 2
                lo = max(s + 1, e - step)
        while hi - lo > 1:  # lo fits (s+1 always does), hi does not (or is n+1)
            mid = (lo + hi) // 2
            if fits(s, mid):
                lo = mid
            else:
                hi = mid
        return lo

    def choose_end(s: int, e: int) -> int:
        if e == n:
            return n
        for level in (PARAGRAPH, SENTENCE, CLAUSE):
            floor = _MIN_FILL[level] * budget
            for j in range(e, s, -1):
                if est(s, j) < floor:
                    break
                if breaks[j - 1] >= level:
                    return j if j == e or fits(s, j) else e
        return e

    def next_start(s: int, b: int) -> int:
        if overlap_tokens == 0:
            return b
        k_min = bisect.bisect_left(prefix, prefix[b] - overlap_tokens, lo=s + 1, hi=b)
        if k_min < b and counter.one(starts[k_min], ends[b - 1]) > overlap_tokens + overhead:
            lo, hi = k_min, b - 1  # the estimate was short: smallest k whose real overlap fits
            while lo < hi:
                mid = (lo + hi) // 2
                if counter.one(starts[mid], ends[b - 1]) <= overlap_tokens + overhead:
                    hi = mid
                else:
                    lo = mid + 1
            k_min = lo if counter.one(starts[lo], ends[b - 1]) <= overlap_tokens + overhead else b
        # the next chunk must still have room for the unit after the overlap
        while k_min < b and est(k_min, b + 1) > budget:
            k_min += 1
        if k_min >= b:
            return b
        for k in range(k_min, b):
            if breaks[k - 1] >= SENTENCE and est(k, b) * 2 >= min(overlap_tokens, est(k_min, b)):
                return k
        return k_min

    chunks: list[Chunk] = []
    s = 0
    prev_end = 0
    while s < n:
        e = longest_fit(s)
        b = choose_end(s, e)
        if b <= prev_end and chunks:  # overlap left no room for new text: restart without overlap
            s = prev_end
            continue
        a, z = starts[s], ends[b - 1]
        chunks.append(Chunk(text[a:z], a, z))
        if b == n:
            break
        prev_end = b
        s = next_start(s, b)
    return chunks
