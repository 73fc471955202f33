"""A tiktoken encoding built here, for the token-array tests (these machines cannot download OpenAI's).

tiktoken finds `cl100k_base` by name: its registry of loaded encodings first, then the plugin
constructor, which reads the BPE file from tiktoken's cache directory (TIKTOKEN_CACHE_DIR, file name =
sha1 of the download URL) and refuses a file whose sha256 is not the published one (it deletes it and
downloads again). A file built here can therefore never pass for cl100k_base in that cache; the tests put
a locally trained byte-level BPE *named* cl100k_base into the registry instead (`tiktoken.registry.ENCODINGS`,
where `tiktoken.get_encoding` looks first), in the process that runs both the client (LangChain, which
tokenizes with it) and the gateway (which decodes with it): a fake of the real encoding, with the same
byte-level BPE algorithm, vocabulary format and tiktoken code paths.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from collections.abc import Iterator

import regex
import tiktoken
import tiktoken.registry

# cl100k_base's pre-tokenisation pattern (tiktoken_ext/openai_public.py)
PAT = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$"""
       r"""|\s*[\r\n]|\s+(?!\S)|\s""")
TRAINING_TEXT = """
giá vé máy bay đi Đà Nẵng tháng này là bao nhiêu. Hà Nội có nhiều món ăn ngon như phở bò, bún chả, cà phê.
cheap flights to Da Nang this month. The quick brown fox jumps over the lazy dog. Vietnamese and English text
for embeddings, search and retrieval. Thành phố Hồ Chí Minh là thành phố lớn nhất Việt Nam.
"""


def train_bpe(text: str = TRAINING_TEXT, merges: int = 300) -> dict[bytes, int]:
    """A byte-level BPE vocabulary: the 256 bytes, then `merges` merges of the most frequent pairs."""
    ranks = {bytes([i]): i for i in range(256)}
    words = [[bytes([b]) for b in w.encode("utf-8")] for w in regex.findall(PAT, text)]
    for _ in range(merges):
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for w in words:
            pairs.update(itertools.pairwise(w))
        if not pairs:
            break
        (a, b), n = pairs.most_common(1)[0]
        if n < 2:
            break
        merged = a + b
        ranks.setdefault(merged, len(ranks))
        for w in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == a and w[i + 1] == b:
                    w[i:i + 2] = [merged]
                i += 1
    return ranks


def local_encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    ranks = train_bpe()
    return tiktoken.Encoding(name=name, pat_str=PAT, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": len(ranks)})


@contextlib.contextmanager
def registered(encoding: tiktoken.Encoding) -> Iterator[tiktoken.Encoding]:
    """`tiktoken.get_encoding(encoding.name)` answers `encoding` inside the block (this process only)."""
    previous = tiktoken.registry.ENCODINGS.get(encoding.name)
    tiktoken.registry.ENCODINGS[encoding.name] = encoding
    try:
        yield encoding
    finally:
        if previous is None:
            tiktoken.registry.ENCODINGS.pop(encoding.name, None)
        else:
            tiktoken.registry.ENCODINGS[encoding.name] = previous
