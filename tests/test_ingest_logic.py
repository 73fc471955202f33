"""Pure ingest pieces: event decoding/validation (every poison reason), JSONL parsing, point ids,
content hashes, chunking properties (with simple counters and, when built, the real e5 tokenizer),
DLQ records and trace headers. No broker, no model: fast."""

from __future__ import annotations

import datetime as dt
import itertools
import os
import random
import re
import uuid
from pathlib import Path

import pytest
from google.protobuf import struct_pb2
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from vien.documents.events import (
    VIEN_POINT_NAMESPACE,
    EventLimits,
    PoisonEvent,
    content_hash,
    decode_event,
    event_content_hash,
    event_from_json,
    event_from_json_line,
    point_id,
)
from vien.kafka.tracing import extract_context, inject_headers, trace_headers
from vien.v1.documents_pb2 import DocumentEvent
from vien_ingest import dlq
from vien_ingest.chunking import Chunk, chunk_text

UPSERT, DELETE = DocumentEvent.OP_UPSERT, DocumentEvent.OP_DELETE


def ev(**kw) -> DocumentEvent:
    base = {"op": UPSERT, "doc_id": "d1", "tenant": "acme", "version": 3, "text": "Xin chào thế giới."}
    base.update(kw)
    return DocumentEvent(**base)


# ------------------------------------------------------------------------------------------ decode_event

def test_decode_valid_upsert_and_delete() -> None:
    e = ev(lang="vi", title="T")
    e.metadata.update({"k": "v"})
    got = decode_event(e.SerializeToString(), [("traceparent", b"x")])
    assert got == e
    d = DocumentEvent(op=DELETE, doc_id="d1", tenant="acme", version=4)
    assert decode_event(d.SerializeToString()) == d  # no text needed for a delete
    assert decode_event(ev(version=0).SerializeToString()).version == 0  # unversioned is allowed


LIMITS = EventLimits(max_text_chars=100, max_title_chars=10,
                     max_metadata_bytes=64)


@pytest.mark.parametrize(("value", "code", "fragment"), [
    (None, "tombstone", "tombstone"),
    (b"\xff\xff\xff\xff", "undecodable", "undecodable"),
    (b"\x12\x02\xff\xfe", "undecodable", "undecodable"),  # doc_id with invalid UTF-8
    (b"", "op_unspecified", "op is unspecified"),
    (ev(op=0).SerializeToString(), "op_unspecified", "op is unspecified"),
    (b"\x08\x07" + ev(op=0).SerializeToString(), "op_unknown", "unknown op 7"),
    (ev(doc_id="").SerializeToString(), "missing_doc_id", "doc_id is missing"),
    (ev(tenant="").SerializeToString(), "missing_tenant", "tenant is missing"),
    (DocumentEvent(op=DELETE, doc_id="d1").SerializeToString(), "missing_tenant", "tenant is missing"),
    (ev(text="").SerializeToString(), "empty_text", "upsert with empty text"),
    (ev(text=" \n\t ").SerializeToString(), "empty_text", "upsert with empty text"),
    (ev(text="x" * 101).SerializeToString(), "text_too_long", "101 characters > 100"),
    (ev(title="t" * 11).SerializeToString(), "title_too_long", "title too long"),
    (ev(doc_id="d" * 513).SerializeToString(), "doc_id_too_long", "doc_id too long: 513 characters > 512"),
    (ev(tenant="t" * 129).SerializeToString(), "tenant_too_long", "tenant too long: 129 characters > 128"),
    (ev(doc_id="a\nb").SerializeToString(), "doc_id_control_char", "U+000A"),
    (ev(doc_id="a\x00b").SerializeToString(), "doc_id_control_char", "U+0000"),
    (ev(tenant="ac\x1bme").SerializeToString(), "tenant_invalid", "must match"),
    (ev(doc_id=" d1").SerializeToString(), "doc_id_whitespace", "whitespace"),
    (ev(tenant="a/b").SerializeToString(), "tenant_invalid", "'/'"),
    (ev(tenant="acme corp").SerializeToString(), "tenant_invalid", "no spaces"),
    (ev(lang="vi\t").SerializeToString(), "lang_control_char", "lang"),
    (ev(profile="p" * 65).SerializeToString(), "profile_too_long", "profile"),
])
def test_every_poison_reason(value, code, fragment) -> None:
    with pytest.raises(PoisonEvent) as err:
        decode_event(value, None, LIMITS)
    assert err.value.code == code
    assert fragment in err.value.reason and str(err.value) == err.value.reason


def test_metadata_size_limit_and_default_text_limit() -> None:
    e = ev()
    e.metadata.update({"k": "v" * 100})
    with pytest.raises(PoisonEvent, match="metadata too large"):
        decode_event(e.SerializeToString(), None, LIMITS)
    assert decode_event(ev(text="a" * 1_000_000).SerializeToString()).text  # default hard limit: 1,000,000
    with pytest.raises(PoisonEvent, match="1000001 characters > 1000000"):
        decode_event(ev(text="a" * 1_000_001).SerializeToString())


def test_delete_ignores_text_limits() -> None:
    d = DocumentEvent(op=DELETE, doc_id="d1", tenant="acme", text="x" * 500)
    assert decode_event(d.SerializeToString(), None, LIMITS).op == DELETE


# ------------------------------------------------------------------------------------------- JSON lines

def test_event_from_json_ok() -> None:
    e = event_from_json({"op": "upsert", "doc_id": 42, "version": 7, "tenant": "acme", "lang": "vi",
                         "title": "Tiêu đề", "text": "Nội dung.", "metadata": {"tags": ["a", "b"], "n": 1}})
    assert (e.op, e.doc_id, e.version, e.tenant, e.lang, e.title) == (UPSERT, "42", 7, "acme", "vi", "Tiêu đề")
    assert e.metadata["tags"][0] == "a" and e.metadata["n"] == 1.0
    d = event_from_json_line('{"op": "delete", "doc_id": "x", "tenant": "acme"}', 3)
    assert (d.op, d.version, d.text) == (DELETE, 0, "")


@pytest.mark.parametrize(("obj", "message"), [
    ([1, 2], "line 5: expected a JSON object, got list"),
    ({"doc_id": "a", "tenant": "t", "text": "x"}, "line 5: field 'op': is required"),
    ({"op": "insert", "doc_id": "a", "tenant": "t", "text": "x"},
     "line 5: field 'op': must be \"upsert\" or \"delete\""),
    ({"op": "upsert", "tenant": "t", "text": "x"}, "line 5: field 'doc_id': is required"),
    ({"op": "upsert", "doc_id": 1.5, "tenant": "t", "text": "x"}, "line 5: field 'doc_id': must be a string"),
    ({"op": "upsert", "doc_id": True, "tenant": "t", "text": "x"}, "line 5: field 'doc_id': must be a string"),
    ({"op": "upsert", "doc_id": "", "tenant": "t", "text": "x"}, "line 5: field 'doc_id': doc_id is missing"),
    ({"op": "upsert", "doc_id": "a", "text": "x"}, "line 5: field 'tenant': is required"),
    ({"op": "upsert", "doc_id": "a", "tenant": 3, "text": "x"}, "line 5: field 'tenant': must be a string, got int"),
    ({"op": "upsert", "doc_id": "a", "tenant": "a/b", "text": "x"}, "line 5: field 'tenant': tenant 'a/b' must match"),
    ({"op": "upsert", "doc_id": "a", "tenant": "t"}, "line 5: field 'text': is required for an upsert"),
    ({"op": "upsert", "doc_id": "a", "tenant": "t", "text": "  "}, "line 5: field 'text': upsert with empty text"),
    ({"op": "upsert", "doc_id": "a", "tenant": "t", "text": 5}, "line 5: field 'text': must be a string"),
    ({"op": "upsert", "doc_id": "a", "tenant": "t", "text": "x", "version": -1},
     "line 5: field 'version': must be between 0 and"),
    ({"op": "upsert", "doc_id": "a", "tenant": "t", "text": "x", "version": "7"},
     "line 5: field 'version': must be an integer, got str"),
    ({"op": "upsert", "doc_id": "a", "tenant": "t", "text": "x", "metadata": [1]},
     "line 5: field 'metadata': must be an object, got list"),
    ({"op": "upsert", "doc_id": "a", "tenant": "t", "text": "x", "lang": 1}, "line 5: field 'lang': must be a string"),
    ({"op": "upsert", "doc_id": "a", "tenant": "t", "txt": "x"}, "line 5: unknown field(s) 'txt'"),
])
def test_event_from_json_errors_name_field_and_line(obj, message) -> None:
    with pytest.raises(ValueError) as err:
        event_from_json(obj, line=5)
    assert str(err.value).startswith(message), str(err.value)


def test_event_from_json_line_invalid_json() -> None:
    with pytest.raises(ValueError, match=r"^line 9: invalid JSON: .*column"):
        event_from_json_line('{"op": "upsert",', 9)


# ----------------------------------------------------------------------------------- ids and hashes

def test_point_ids_are_stable_and_tenant_scoped() -> None:
    assert uuid.uuid5(uuid.NAMESPACE_URL, "https://vien.dev/ns/point") == VIEN_POINT_NAMESPACE
    pid = point_id("acme", "1", 0)
    assert pid == str(uuid.uuid5(VIEN_POINT_NAMESPACE, "acme/1#0"))
    assert uuid.UUID(pid).version == 5
    assert point_id("acme", "1", 0) == pid  # deterministic
    assert point_id("globex", "1", 0) != pid  # same doc_id, other tenant: other point
    assert len({point_id("acme", "1", i) for i in range(100)}) == 100
    assert point_id("acme", "1#0", 1) != point_id("acme", "1", 0)
    with pytest.raises(ValueError):
        point_id("a/b", "c", 0)
    with pytest.raises(ValueError):
        point_id("a", "c", -1)


def test_point_id_value_is_frozen() -> None:
    # changing the namespace or the format would orphan every stored point: this pins both
    assert point_id("acme", "1", 0) == "16cfcffa-8e5f-5ad6-96aa-d7278df66a8c"


def test_content_hash() -> None:
    h = content_hash("T", "text", {"a": 1, "b": [1, "x"]}, "e5-small")
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert h == content_hash("T", "text", {"b": [1.0, "x"], "a": 1.0}, "e5-small")  # key order, int vs double
    s = struct_pb2.Struct()
    s.update({"a": 1, "b": [1, "x"]})
    assert h == content_hash("T", "text", s, "e5-small")  # Struct == dict
    others = {content_hash("T2", "text", {"a": 1, "b": [1, "x"]}, "e5-small"),
              content_hash("T", "text.", {"a": 1, "b": [1, "x"]}, "e5-small"),
              content_hash("T", "text", {"a": 2, "b": [1, "x"]}, "e5-small"),
              content_hash("T", "text", {"a": 1, "b": [1, "x"]}, "qwen3"),
              content_hash("T", "text", {"a": 1, "b": [1, "x"]}, "e5-small", salt="chunk=256"),
              content_hash("", "Ttext", {"a": 1, "b": [1, "x"]}, "e5-small")}
    assert h not in others and len(others) == 6
    assert content_hash("", "x", None, "p") == content_hash("", "x", {}, "p")
    e = ev(title="T", text="text")
    e.metadata.update({"a": 1, "b": [1, "x"]})
    assert event_content_hash(e, "e5-small") == h


# ---------------------------------------------------------------------------------------------- chunking

def words_count(texts: list[str]) -> list[int]:
    return [len(t.split()) + 2 for t in texts]  # +2: like <s> ... </s>


def chars_count(texts: list[str]) -> list[int]:
    return [len(t) + 1 for t in texts]


VI_PARAS = [
    "Hà Nội là thủ đô của Việt Nam. Thành phố có lịch sử hơn một nghìn năm! Bạn đã đến đó chưa?",
    "The quick brown fox jumps over the lazy dog. It was not amused… Then it left; nobody noticed.",
    "Phở là món ăn nổi tiếng, được làm từ bánh phở, nước dùng và thịt bò hoặc gà. Nhiều du khách thích nó.",
    "Mr. Smith went to Washington. He said: “We will see.” And that was that.",
]


def sample_text(n_paras: int, seed: int = 0) -> str:
    rnd = random.Random(seed)
    return "\n\n".join(" ".join(rnd.choice(VI_PARAS) for _ in range(rnd.randint(1, 4))) for _ in range(n_paras))


def check_chunks(text: str, chunks: list[Chunk], count, max_tokens: int) -> None:
    assert chunks
    for c in chunks:
        assert text[c.start_char:c.end_char] == c.text
        assert c.text == c.text.strip() and c.text
        assert count([c.text])[0] <= max_tokens
    for a, b in itertools.pairwise(chunks):
        assert a.start_char < b.start_char and a.end_char < b.end_char  # progress
        assert b.start_char <= a.end_char or not text[a.end_char:b.start_char].strip()  # no gap with content
    # coverage: every non-whitespace character is in some chunk
    covered = bytearray(len(text))
    for c in chunks:
        covered[c.start_char:c.end_char] = b"\x01" * (c.end_char - c.start_char)
    assert all(covered[i] or text[i].isspace() for i in range(len(text)))


@pytest.mark.parametrize("count", [words_count, chars_count], ids=["words", "chars"])
@pytest.mark.parametrize(("max_tokens", "overlap"), [(24, 0), (24, 8), (64, 16), (200, 50)])
def test_chunking_properties(count, max_tokens, overlap) -> None:
    if count is chars_count:
        max_tokens *= 5
        overlap *= 5
    text = sample_text(12, seed=max_tokens + overlap)
    chunks = chunk_text(text, count, max_tokens, overlap)
    check_chunks(text, chunks, count, max_tokens)
    assert len(chunks) > 1
    assert chunk_text(text, count, max_tokens, overlap) == chunks  # deterministic
    for a, b in itertools.pairwise(chunks):
        if overlap:
            assert b.start_char < a.end_char, "no overlap"
            assert count([text[b.start_char:a.end_char]])[0] <= overlap + count([""])[0]
        else:
            assert b.start_char >= a.end_char


def test_chunks_end_on_sentence_boundaries_when_possible() -> None:
    text = sample_text(20, seed=3)
    chunks = chunk_text(text, words_count, 60, 10)
    ends = [c.text[-1] for c in chunks[:-1]]
    assert sum(ch in ".!?…”" for ch in ends) >= 0.8 * len(ends), ends


def test_short_text_is_one_chunk_and_blank_is_none() -> None:
    assert chunk_text("  Xin chào!  ", words_count, 10, 3) == [Chunk("Xin chào!", 2, 11)]
    assert chunk_text(" \n ", words_count, 10, 3) == []
    text = "một hai ba bốn năm"
    assert chunk_text(text, words_count, 7, 2) == [Chunk(text, 0, len(text))]  # 5 words + 2 = 7: fits exactly
    assert len(chunk_text(text, words_count, 6, 2)) == 2


def test_long_words_fall_back_to_characters() -> None:
    blob = "https://example.com/" + "a1b2c3" * 100
    text = f"Xem tại {blob} nhé."
    chunks = chunk_text(text, chars_count, 50, 10)
    check_chunks(text, chunks, chars_count, 50)
    # NFD Vietnamese: never cut between a letter and its combining marks
    import unicodedata
    nfd = unicodedata.normalize("NFD", "Nguyễnthịminhkhaiđườngphố" * 8)
    for c in chunk_text(nfd, chars_count, 20, 0):
        assert not unicodedata.combining(c.text[0])


def test_chunking_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        chunk_text("x", words_count, 0, 0)
    with pytest.raises(ValueError):
        chunk_text("x", words_count, 10, 10)
    with pytest.raises(ValueError, match="no room"):
        chunk_text("a b c d e f", lambda ts: [len(t.split()) + 5 for t in ts], 5, 0)


TOKENIZER = Path(os.environ.get("VIEN_MODELS_DIR", Path.home() / ".cache" / "vien" / "models")) \
    / "multilingual-e5-small" / "tokenizer.json"


@pytest.mark.skipif(not TOKENIZER.exists(), reason="the e5 tokenizer is not built (vien models setup)")
def test_chunking_with_the_real_e5_tokenizer() -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    tok.no_truncation()

    def count(texts: list[str]) -> list[int]:  # what the document encoder sees: "passage: " + text + specials
        return [len(e.ids) for e in tok.encode_batch([f"passage: {t}" for t in texts])]

    text = sample_text(40, seed=7)
    chunks = chunk_text(text, count, 128, 24)
    check_chunks(text, chunks, count, 128)
    assert len(chunks) > 3 and chunk_text(text, count, 128, 24) == chunks
    assert max(count([c.text])[0] for c in chunks) > 0.6 * 128  # chunks are reasonably full


# ------------------------------------------------------------------------------------------------ DLQ

def test_dlq_record_keeps_bytes_and_adds_headers() -> None:
    original = b"\x00\x01not-a-proto"
    headers = [("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"), ("vien-dlq-reason", b"old")]
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    value, out = dlq.dlq_record(original, headers, "undecodable: boom", "vien.documents", 3, 1234, now=when,
                                code="undecodable")
    assert value is original
    h = dict(out)
    assert h["traceparent"] == headers[0][1]
    assert h["vien-dlq-reason"] == b"undecodable: boom"  # the previous reason is replaced, not duplicated
    assert [k for k, _ in out].count("vien-dlq-reason") == 1
    assert h["vien-dlq-source"] == b"vien.documents/3/1234"
    assert h["vien-dlq-time"] == b"2026-01-02T03:04:05.678Z"
    info = dlq.parse_dlq_headers(out)
    assert (info.reason, info.topic, info.partition, info.offset, info.code) == \
        ("undecodable: boom", "vien.documents", 3, 1234, "undecodable")
    _, out2 = dlq.dlq_record(None, None, "é" * 5000, "t", 0, 0)
    r = dict(out2)["vien-dlq-reason"]
    assert len(r) <= dlq.MAX_REASON_BYTES and r.decode("utf-8").endswith("...")
    with pytest.raises(ValueError):
        dlq.parse_dlq_headers([("traceparent", b"x")])


# ------------------------------------------------------------------------------------- trace headers

def test_trace_context_round_trips_through_headers() -> None:
    tracer = TracerProvider().get_tracer("t")
    assert inject_headers([("a", b"1")]) == [("a", b"1")]  # no active span: nothing added
    with tracer.start_as_current_span("produce") as span:
        h = inject_headers([("a", b"1"), ("traceparent", b"stale")])
    assert [k for k, _ in h].count("traceparent") == 1 and h[0] == ("a", b"1")
    ctx = trace.get_current_span(extract_context(h)).get_span_context()
    assert ctx.is_remote and ctx.trace_id == span.get_span_context().trace_id
    assert ctx.span_id == span.get_span_context().span_id
    assert set(trace_headers(h)) == {"traceparent"}
    # a consumer span parented on it joins the trace
    with tracer.start_as_current_span("consume", context=extract_context(tuple(h))) as child:
        assert child.get_span_context().trace_id == span.get_span_context().trace_id
    for bad in ([], None, [("traceparent", b"garbage")], [("traceparent", b"\xff\xfe")], [("traceparent", None)]):
        assert not trace.get_current_span(extract_context(bad)).get_span_context().is_valid


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ALPHABET = st.sampled_from([*"ab ếẫđ.!?,;\n\n  —", "Xin", "chào", "Ông", "\u0301", "https://x.y/zzzzzzzz"])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(_ALPHABET, max_size=120).map("".join), st.integers(4, 30), st.integers(0, 12),
       st.sampled_from(["words", "chars"]))
def test_chunking_properties_on_arbitrary_text(text, max_tokens, overlap, which) -> None:
    count = words_count if which == "words" else chars_count
    overlap = min(overlap, max_tokens - 1)
    chunks = chunk_text(text, count, max_tokens, overlap)
    if not text.strip():
        assert chunks == []
        return
    check_chunks(text, chunks, count, max_tokens)
    assert chunk_text(text, count, max_tokens, overlap) == chunks
