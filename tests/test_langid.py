"""Language identification for the router: accuracy on a labelled set plus edge cases."""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path

import pytest

from vien.text import langid
from vien.text.langid import EN, OTHER, VI, detect, detect_with_score

DATA = Path(__file__).parent / "data" / "langid_labelled.tsv"


def _load() -> dict[str, list[tuple[str, str]]]:
    """class -> [(gold, text)]; classes: vi_accented, vi_unaccented, en, other."""
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    with DATA.open(encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        assert header == ["lang", "accented", "text"]
        for line in fh:
            lang, accented, text = line.rstrip("\n").split("\t", 2)
            assert lang in (VI, EN, OTHER), line
            cls = lang if lang != VI else ("vi_accented" if accented == "1" else "vi_unaccented")
            out[cls].append((lang, text))
    return out


ROWS = _load()


def test_labelled_set_shape() -> None:
    assert len(ROWS["vi_accented"]) >= 110
    assert len(ROWS["vi_unaccented"]) >= 110
    assert len(ROWS["en"]) >= 110
    assert len(ROWS["other"]) >= 25
    for _, text in ROWS["vi_unaccented"]:
        assert text.isascii(), text
    for cls, rows in ROWS.items():
        for _, text in rows:
            words = len(text.split())
            # scripts written without spaces (CJK, Thai) may be one "word"
            assert words <= 20 and (words >= 2 or cls == "other"), text


@pytest.mark.parametrize(("cls", "floor"), [("vi_accented", 0.97), ("vi_unaccented", 0.90), ("en", 0.97)])
def test_accuracy_per_class(cls: str, floor: float) -> None:
    rows = ROWS[cls]
    wrong = [(text, detect_with_score(text)) for gold, text in rows if detect(text) != gold]
    acc = 1 - len(wrong) / len(rows)
    detail = "\n".join(f"  {text!r} -> {got}" for text, got in wrong)
    assert acc >= floor, f"{cls}: accuracy {acc:.3f} < {floor} ({len(wrong)}/{len(rows)} wrong):\n{detail}"


def test_other_languages_mostly_other() -> None:
    rows = ROWS["other"]
    wrong = [(text, detect(text)) for _, text in rows if detect(text) != OTHER]
    assert len(wrong) / len(rows) <= 0.2, wrong


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\n\t",
        "12345",
        "3.14 + 2 = 5.14",
        "😀👍🎉",
        "🇻🇳 🇺🇸",
        "https://example.com/a?b=c",
        "user@example.com",
        "!!! ??? ...",
        "#123",
    ],
)
def test_no_letters_default(text: str) -> None:
    assert detect(text) == OTHER
    assert detect_with_score(text) == (OTHER, 0.0)
    assert detect(text, no_letters=VI) == VI
    assert langid.NO_LETTERS_LANG == OTHER


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("tôi", VI),
        ("phở", VI),
        ("đi", VI),
        ("xin chào", VI),
        ("gia vang", VI),
        ("ko dc", VI),
        ("hello", EN),
        ("the weather", EN),
        ("how are you", EN),
        ("東京", OTHER),
        ("我想买手机", OTHER),
        ("สวัสดี", OTHER),
        ("привет мир", OTHER),
        ("안녕하세요", OTHER),
    ],
)
def test_short_texts(text: str, want: str) -> None:
    assert detect(text) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # Vietnamese sentence with English nouns: Vietnamese (English nouns count half)
        ("review laptop gaming dưới 20 triệu", VI),
        ("cách cài đặt Python trên Windows", VI),
        ("mua iphone 15 pro max gia re", VI),
        ("setup router wifi cho nha 3 tang", VI),
        # English sentence with Vietnamese names or dishes: English (names and dishes do not vote)
        ("best pho in ha noi", EN),
        ("where to eat bánh mì in Hội An", EN),
        ("weather in ho chi minh city next week", EN),
        # English majority with two Vietnamese words
        ("what does xin chào mean in english", EN),
        # Vietnamese majority with an English phrase
        ("hôm nay mình đi happy hour với team", VI),
    ],
)
def test_code_switched_majority(text: str, want: str) -> None:
    assert detect(text) == want


def test_urls_and_numbers_are_ignored_in_text() -> None:
    assert detect("xem chi tiết tại https://example.com/abc 0901234567") == VI
    assert detect("see https://example.com for details, call 555 0100") == EN


def test_other_script_majority() -> None:
    assert detect("iPhone 15 的价格是多少") == OTHER
    assert detect("học tiếng Trung 你好 cho người mới bắt đầu") == VI


def test_scores_in_range_and_types() -> None:
    for rows in ROWS.values():
        for _, text in rows[:20]:
            lang, score = detect_with_score(text)
            assert lang in (VI, EN, OTHER)
            assert isinstance(score, float) and 0.0 <= score <= 1.0


def test_decomposed_unicode_is_normalised() -> None:
    import unicodedata

    text = unicodedata.normalize("NFD", "Tôi muốn đặt bàn")
    assert detect(text) == VI


def test_thread_safe_same_answers() -> None:
    texts = [t for rows in ROWS.values() for _, t in rows]
    expected = [detect(t) for t in texts]
    results: list[list[str]] = []

    def work() -> None:
        results.append([detect(t) for t in texts])

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(r == expected for r in results)
