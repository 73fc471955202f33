"""Evaluation datasets in one layout (BEIR-like):

- ``DIR/corpus.jsonl``: one document a line, ``{"id", "text", "title"?, "lang"?, ...}``
- ``DIR/<split>/queries.jsonl`` (or ``DIR/queries.jsonl`` without a split): ``{"id", "text", "lang"?, ...}``
- ``DIR/<split>/qrels.tsv``: ``query_id<TAB>doc_id<TAB>relevance`` (an optional header line), relevance >= 1
  means relevant; graded values feed nDCG.

Malformed input raises `DatasetError` naming the file and the line. Judgments naming a query or a document
that the files do not define cannot be scored: they are left out of the scoring but counted (`UnknownIds`),
and the counts go into every summary, so a broken qrels file never passes silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message names the file (and line)."""


@dataclass(frozen=True)
class Doc:
    id: str
    text: str
    title: str = ""
    lang: str = ""


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    lang: str = ""


@dataclass
class UnknownIds:
    """qrels rows left out of scoring because they name ids the dataset does not define."""

    rows: int = 0
    query_ids: set[str] = field(default_factory=set)
    doc_ids: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, int]:
        return {"rows": self.rows, "query_ids": len(self.query_ids), "doc_ids": len(self.doc_ids)}


@dataclass
class Dataset:
    name: str
    split: str
    corpus: dict[str, Doc]
    queries: list[Query]
    qrels: dict[str, dict[str, int]]      # query id -> doc id -> relevance (known ids only)
    unknown: UnknownIds
    files: dict[str, Path] = field(default_factory=dict)

    def judged_queries(self) -> list[Query]:
        """Queries with at least one relevant document: the ones a ranking can be scored on."""
        return [q for q in self.queries if any(r > 0 for r in self.qrels.get(q.id, {}).values())]


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        with path.open(encoding="utf-8") as f:
            yield from enumerate(f, 1)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc})") from None


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for n, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
        yield n, obj


def _id(path: Path, n: int, obj: dict[str, Any]) -> str:
    v = obj.get("id", obj.get("_id"))
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not v.strip():
        raise DatasetError(f"{path}:{n}: field 'id' is missing or not a non-empty string")
    return v


def _str(path: Path, n: int, obj: dict[str, Any], name: str, required: bool) -> str:
    v = obj.get(name)
    if v is None and not required:
        return ""
    if not isinstance(v, str) or (required and not v.strip()):
        what = "missing or empty" if v is None or isinstance(v, str) else f"not a string ({type(v).__name__})"
        raise DatasetError(f"{path}:{n}: field {name!r} is {what}")
    return v


def load_corpus(path: Path) -> dict[str, Doc]:
    docs: dict[str, Doc] = {}
    for n, obj in _jsonl(path):
        doc_id = _id(path, n, obj)
        if doc_id in docs:
            raise DatasetError(f"{path}:{n}: duplicate document id {doc_id!r}")
        docs[doc_id] = Doc(doc_id, _str(path, n, obj, "text", True), _str(path, n, obj, "title", False),
                           _str(path, n, obj, "lang", False))
    if not docs:
        raise DatasetError(f"{path}: no documents")
    return docs


def load_queries(path: Path) -> list[Query]:
    out: list[Query] = []
    seen: set[str] = set()
    for n, obj in _jsonl(path):
        qid = _id(path, n, obj)
        if qid in seen:
            raise DatasetError(f"{path}:{n}: duplicate query id {qid!r}")
        seen.add(qid)
        out.append(Query(qid, _str(path, n, obj, "text", True), _str(path, n, obj, "lang", False)))
    if not out:
        raise DatasetError(f"{path}: no queries")
    return out


def load_qrels(path: Path) -> list[tuple[int, str, str, int]]:
    """(line, query id, doc id, relevance) rows; a first line whose relevance is not a number is a header."""
    rows: list[tuple[int, str, str, int]] = []
    for n, line in _lines(path):
        if not line.strip():
            continue
        cols = line.rstrip("\r\n").split("\t")
        if len(cols) == 1:
            cols = line.split()
        if len(cols) == 4:  # TREC layout: query_id iteration doc_id relevance
            cols = [cols[0], cols[2], cols[3]]
        if len(cols) != 3:
            raise DatasetError(f"{path}:{n}: expected 3 tab-separated columns query_id, doc_id, relevance; "
                               f"got {len(cols)}")
        qid, did, rel = (c.strip() for c in cols)
        try:
            relevance = int(rel)
        except ValueError:
            if not rows and n == 1:
                continue  # header
            raise DatasetError(f"{path}:{n}: relevance {rel!r} is not an integer") from None
        if not qid or not did:
            raise DatasetError(f"{path}:{n}: empty query_id or doc_id")
        rows.append((n, qid, did, relevance))
    if not rows:
        raise DatasetError(f"{path}: no judgments")
    return rows


def load_dataset(root: str | Path, split: str = "") -> Dataset:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset directory not found")
    qdir = root / split if split else root
    if split and not qdir.is_dir():
        have = sorted(p.name for p in root.iterdir() if (p / "queries.jsonl").is_file())
        raise DatasetError(f"{qdir}: split {split!r} not found (splits here: {', '.join(have) or 'none'})")
    files = {"corpus": root / "corpus.jsonl", "queries": qdir / "queries.jsonl", "qrels": qdir / "qrels.tsv"}
    corpus = load_corpus(files["corpus"])
    queries = load_queries(files["queries"])
    known_q = {q.id for q in queries}
    qrels: dict[str, dict[str, int]] = {}
    unknown = UnknownIds()
    for n, qid, did, rel in load_qrels(files["qrels"]):
        bad = False
        if qid not in known_q:
            unknown.query_ids.add(qid)
            bad = True
        if did not in corpus:
            unknown.doc_ids.add(did)
            bad = True
        if bad:
            unknown.rows += 1
            continue
        prev = qrels.setdefault(qid, {}).get(did)
        if prev is not None and prev != rel:
            raise DatasetError(f"{files['qrels']}:{n}: ({qid}, {did}) judged again with a different relevance "
                               f"({prev} before, {rel} here)")
        qrels[qid][did] = rel
    return Dataset(root.name, split, corpus, queries, qrels, unknown, files)
