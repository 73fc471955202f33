"""Accent restoration on its own (vien.text.accents, vien.text.accent_stats): known phrases, context, what must
never change, odd input, and the statistics stores (in memory, and a real redis-server)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from vien.text.accent_stats import ALL, AccentRestorer, MemoryAccentStats, RedisAccentStats
from vien.text.accents import (
    AccentModel,
    SyllableCounts,
    build_prior,
    load_prior,
    restore,
    syllable_accuracy,
    syllable_runs,
)
from vien.text.syllables import FOLDED_SYLLABLES, accented_forms

# A tenant's documents (written for this test): what its users search for.
DOCS = [
    "Giá vé máy bay đi Đà Nẵng tháng này rẻ hơn tháng trước. Vé máy bay giá rẻ bán hết rất nhanh.",
    "Làm hộ chiếu mất bao lâu? Thủ tục làm hộ chiếu ở Hà Nội mất khoảng tám ngày làm việc.",
    "Thủ đô của Việt Nam là Hà Nội. Hà Nội có nhiều hồ đẹp.",
    "Câu chuyện về bóng ma trong lâu đài cổ làm bọn trẻ sợ. Bóng ma xuất hiện lúc nửa đêm.",
    "Má tôi nấu cơm rất ngon. Ba má tôi sống ở quê.",
    "Điện thoại giá rẻ dưới hai mươi triệu bán chạy nhất năm nay.",
]


@pytest.fixture(scope="module")
def counts() -> SyllableCounts:
    return SyllableCounts().add_texts(DOCS)


@pytest.fixture(scope="module")
def prior(models_dir: Path) -> dict[str, float]:
    p = load_prior(models_dir)
    assert len(p) > 2000  # the XLM-R vocabulary holds thousands of Vietnamese syllables
    return p


@pytest.fixture(scope="module")
def model(prior: dict[str, float], counts: SyllableCounts) -> AccentModel:
    return AccentModel(prior, counts)


def test_inventory_knows_the_accented_forms_of_a_syllable() -> None:
    assert set(accented_forms("ma")) == {"ma", "má", "mà", "mã", "mạ", "mả"}
    assert {"người", "ngươi"} <= set(accented_forms("nguoi"))
    assert set(accented_forms("viet")) == {"viết", "việt"}  # a checked syllable takes sắc or nặng only
    assert {"quyền", "quyết", "quyển"} <= set(accented_forms("quyen")) | set(accented_forms("quyet"))
    assert {"hòa", "hoà"} <= set(accented_forms("hoa"))      # both tone placements are written
    assert "dd" not in FOLDED_SYLLABLES and accented_forms("laptop") == ()


@pytest.mark.parametrize(("typed", "expected"), [
    ("gia ve may bay di da nang", "giá vé máy bay đi đà nẵng"),
    ("Gia ve may bay di Da Nang", "Giá vé máy bay đi Đà Nẵng"),          # case kept
    ("lam ho chieu mat bao lau?", "làm hộ chiếu mất bao lâu?"),            # punctuation kept
    ("thu do cua Viet Nam la Ha Noi", "thủ đô của Việt Nam là Hà Nội"),
])
def test_known_phrases_are_restored(model: AccentModel, typed: str, expected: str) -> None:
    r = restore(typed, model)
    assert r.text == expected and r.restored
    assert 0.5 < r.confidence <= 1.0 and r.syllables == len(typed.split())


def test_ambiguous_syllables_are_resolved_by_context(model: AccentModel) -> None:
    assert restore("bong ma trong lau dai", model).text == "bóng ma trong lâu đài"
    assert restore("ma toi nau com", model).text == "má tôi nấu cơm"
    assert restore("ba ma toi", model).text == "ba má tôi"


@pytest.mark.parametrize("text", [
    "giá ve may bay di da nang",                  # some diacritics: the user's own spelling, left alone
    "Giá vé máy bay đi Đà Nẵng",                  # accented
    "",
    "12345 67.89",
    "😀👍 🎉",
    "https://example.com/gia-ve a@b.vn",
])
def test_accented_partial_and_letterless_text_is_never_altered(model: AccentModel, text: str) -> None:
    r = restore(text, model)
    assert r.text == text and not r.restored


def test_tokens_that_are_not_vietnamese_syllables_are_left_alone(model: AccentModel) -> None:
    text = ("review laptop gaming gia re https://shop.vn/gia?re=1 ma_so ABC-123 UBND 20k "
            "me@mail.vn 😀 dien thoai")
    r = restore(text, model)
    assert r.restored
    assert r.text == ("review laptop gaming giá rẻ https://shop.vn/gia?re=1 ma_so ABC-123 UBND 20k "
                      "me@mail.vn 😀 điện thoại")


def test_mixed_text_keeps_its_foreign_words_and_english_lone_syllables_beside_them(model: AccentModel) -> None:
    english = {"ram", "top"}.__contains__
    assert restore("review laptop gaming duoi 20 trieu", model, english).text == "review laptop gaming dưới 20 triệu"
    assert restore("ram laptop gia re", model, english).text == "ram laptop giá rẻ"    # "ram" stays (not "rám")
    assert restore("gia 20k", model, english).text == "giá 20k"                        # a number is no foreign word
    assert restore("Paris va London", model, english).text == "Paris và London"       # a Vietnamese word between names
    r = restore("laptop dell", model)
    assert (r.text, r.restored, r.syllables) == ("laptop dell", False, 0)


def test_long_and_odd_input_does_not_crash(model: AccentModel) -> None:
    long = "gia ve may bay " * 10_000
    assert restore(long, model).reason == "too_long"
    odd = "a\u0000b \ufffd \u200d ma\tma\nma " + "x" * 500 + " ' \" ( ) ... ,,, ma"
    r = restore(odd, model)
    assert len(r.text) == len(odd) and r.text.count("\n") == 1
    mid = " ".join(["gia ve may bay di da nang"] * 40)  # 1,000 characters: restored whole
    r = restore(mid, model)
    assert r.restored and r.text.split()[:7] == "giá vé máy bay đi đà nẵng".split()


def test_without_statistics_nothing_is_restored_and_the_reason_says_so() -> None:
    r = restore("gia ve may bay", AccentModel())
    assert (r.text, r.restored, r.reason) == ("gia ve may bay", False, "no_statistics")
    assert not AccentModel().has_counts


def test_the_general_prior_comes_from_the_model_vocabulary(tmp_path: Path, models_dir: Path,
                                                           prior: dict[str, float]) -> None:
    assert abs(sum(prior.values()) - 1.0) < 1e-6
    assert prior["không"] > prior["khống"] and prior["người"] > prior.get("ngưởi", 0.0)
    built = build_prior(models_dir / "multilingual-e5-small" / "tokenizer.json")
    assert built == prior
    assert load_prior(tmp_path) == {}  # no model built: no prior, and nothing written


def test_counts_split_runs_at_punctuation_and_foreign_words() -> None:
    assert list(syllable_runs("Vé máy bay, giá rẻ! iPhone 15 mới")) == [["vé", "máy", "bay"], ["giá", "rẻ"], ["mới"]]
    c = SyllableCounts().add_texts(["Vé máy bay, giá rẻ.", "vé máy bay"])
    assert c.unigrams["vé"] == 2 and c.bigrams["vé máy"] == 2 and c.bigrams["<s> giá"] == 1
    assert "bay giá" not in c.bigrams
    assert SyllableCounts.from_fields(c.fields()) == c


def test_syllable_accuracy_compares_against_the_accented_original() -> None:
    assert syllable_accuracy("Giá vé máy bay?", "giá về máy bay?") == (4, 3)
    assert syllable_accuracy("Giá vé iPhone 15", "gia ve iPhone 15") == (2, 0)
    assert syllable_accuracy("một hai", "mot") == (2, 0)


def test_the_restorer_keeps_a_model_per_tenant_from_the_stats_store(prior: dict[str, float]) -> None:
    async def go() -> None:
        stats = MemoryAccentStats()
        restorer = AccentRestorer(prior, stats, refresh_s=0.0)
        assert not (await restorer.refresh("acme")).has_counts  # nothing counted yet: the general prior
        await stats.add("acme", SyllableCounts().add_texts(DOCS[3:4]))
        await stats.add("beta", SyllableCounts().add_texts(DOCS[4:5]))
        await restorer.refresh("acme")
        await restorer.refresh("beta")
        await restorer.refresh(ALL)
        assert restorer.restore("bong ma", "acme").text == "bóng ma"
        assert restorer.restore("ma toi", "beta").text == "má tôi"
        assert restorer.model(ALL).counts.unigrams["bóng"] == 2 and restorer.model(ALL).counts.unigrams["má"] == 2
        assert restorer.model("") is restorer.general
        await restorer.close()

    asyncio.run(go())


def test_redis_stats_add_up_across_writers_and_survive_an_outage(redis_server, prior: dict[str, float]) -> None:
    async def go() -> None:
        url = redis_server.url
        a, b = RedisAccentStats(url), RedisAccentStats(url)  # two ingest workers
        await a.add("acme", SyllableCounts().add_texts(DOCS[:1]))
        await b.add("acme", SyllableCounts().add_texts(DOCS[:1]))
        loaded = await a.load("acme")
        assert loaded is not None and loaded.unigrams["vé"] == 4 and loaded.bigrams["máy bay"] == 4
        assert await a.version("acme") == 2 and await a.version(ALL) == 2 and await a.version("none") is None
        restorer = AccentRestorer(prior, RedisAccentStats(url))
        await restorer.refresh("acme")
        assert restorer.restore("gia ve may bay", "acme").text == "giá vé máy bay"
        redis_server.kill()
        t0 = time.monotonic()
        await a.add("acme", SyllableCounts().add_texts(DOCS[:1]))   # no exception: ingest goes on
        assert await b.load("acme") is None
        await restorer.refresh("acme")                                # keeps the model it has
        assert restorer.restore("gia ve may bay", "acme").text == "giá vé máy bay"
        assert time.monotonic() - t0 < 20
        for s in (a, b):
            await s.close()
        await restorer.close()

    asyncio.run(go())


def test_router_restores_per_profile_settings_and_request_flag(settings, prior: dict[str, float]) -> None:
    """The router's logic with the real query-embedder logic in process: restoration is on by default with the
    tenant's counts, off per request, off per profile (accents.restore), and off for a tenant without counted
    documents unless accents.restore_without_documents."""
    from vien.embedding.cache import QueryCache
    from vien.runtime.config import AccentsConfig
    from vien_query_embedder.logic import QueryEmbedder
    from vien_router.logic import Router
    from vien_tools.eval.query_path import InProcessQueryClient, NoDocumentClient

    base = settings.config
    name = base.routing.default

    def config(**accents: bool):
        prof = base.profiles[name].model_copy(update={"accents": AccentsConfig(**accents)})
        return base.model_copy(update={"profiles": {**base.profiles, name: prof}})

    async def go() -> None:
        qemb = QueryEmbedder(settings, base, QueryCache(None))
        await qemb.start()
        stats = MemoryAccentStats()
        await stats.add("acme", SyllableCounts().add_texts(DOCS))
        try:
            async def restored(cfg, scope: str = "acme", **kw) -> str:
                restorer = AccentRestorer(prior, stats)
                await restorer.refresh(scope)
                router = Router(cfg, InProcessQueryClient(qemb), NoDocumentClient(), restorer=restorer)
                res = await router.embed(["gia ve may bay di da nang", "cheap flights"], accent_scope=scope, **kw)
                assert res.embeddings[1].restored_text == ""
                return res.embeddings[0].restored_text

            assert await restored(config()) == "giá vé máy bay đi đà nẵng"
            assert await restored(config(), restore_accents=False) == ""
            assert await restored(config(restore=False)) == ""
            assert await restored(config(), scope="nobody") == ""   # no documents counted: not restored
            assert await restored(config(restore_without_documents=True), scope="nobody") != ""
        finally:
            await qemb.close()

    asyncio.run(go())
