"""The profiles file is validated; a bad one fails with a message naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from vien.runtime.config import ConfigError, default_config_path, load_config


def _write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "profiles.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, encoding="utf-8")
    return p


def _default() -> dict:
    return yaml.safe_load(default_config_path().read_text(encoding="utf-8"))


def test_shipped_config_is_valid() -> None:
    cfg = load_config()
    assert cfg.routing.default in cfg.profiles
    for lang in ("vi", "en", "other"):
        assert cfg.route(lang) in cfg.profiles
    p = cfg.profiles["e5-small"]
    assert p.dims == 384 and p.prompt("query", "x {y}") == "query: x {y}"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["profiles"]["e5-small"].update(query_encoder="nope"), "profiles.e5-small.query_encoder"),
        (lambda d: d["profiles"]["e5-small"].update(query_prompt="query:"), "query_prompt"),
        (lambda d: d["profiles"]["e5-small"].update(dims=-1), "dims"),
        (lambda d: d["profiles"]["e5-small"].update(min_dims=999), "min_dims"),
        (lambda d: d["profiles"]["e5-small"].update(collection="bad name!"), "collection"),
        (lambda d: d["profiles"]["e5-small"].update(surprise=1), "surprise"),
        (lambda d: d["routing"]["languages"].update(fr="e5-small"), "languages"),
        (lambda d: d["routing"].update(default="ghost"), "routing.default"),
        (lambda d: d["encoders"]["e5-small-fp32"].update(backend="openai"), "base_url"),
        (lambda d: d["encoders"]["e5-small-fp32"].update(variant="int4"), "variant"),
        (lambda d: d["profiles"]["e5-small"]["lexical"].update(k1=-1), "profiles.e5-small.lexical.k1"),
        (lambda d: d["profiles"]["e5-small"]["lexical"].update(b=1.5), "profiles.e5-small.lexical.b"),
        (lambda d: d["profiles"]["e5-small"]["lexical"].update(avg_doc_terms=0), "lexical.avg_doc_terms"),
        (lambda d: d["profiles"]["e5-small"]["lexical"].update(stemmer="porter"), "lexical.stemmer"),
        (lambda d: d["profiles"]["e5-small"]["search"].update(mode="fuzzy"), "profiles.e5-small.search.mode"),
        (lambda d: d["profiles"]["e5-small"]["search"].update(fusion="max"), "search.fusion"),
        (lambda d: d["profiles"]["e5-small"]["search"].update(rrf_k=0), "search.rrf_k"),
        (lambda d: d["profiles"]["e5-small"]["search"].update(prefetch_k=5000), "search.prefetch_k"),
        (lambda d: d["profiles"]["e5-small"]["search"].update(dense_weight=0, sparse_weight=0),
         "dense_weight and sparse_weight must not both be 0"),
        (lambda d: d["profiles"]["e5-small"]["search"].update(fusion="engine_rrf", dense_weight=2),
         "fusion 'engine_rrf' is unweighted"),
        (lambda d: (d["profiles"]["e5-small"]["lexical"].update(enabled=False),
                    d["profiles"]["e5-small"]["search"].update(mode="hybrid")), "needs lexical.enabled"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, mutate, expected: str) -> None:
    data = _default()
    mutate(data)
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, data))
    assert expected in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "profiles: [unclosed"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- a list"))


def test_dims_policy() -> None:
    p = load_config().profiles["e5-small"]
    assert p.check_dims(0) == 384 and p.check_dims(256) == 256
    with pytest.raises(ValueError, match=r"128\.\.384"):
        p.check_dims(64)
    with pytest.raises(ValueError, match=r"128\.\.384"):
        p.check_dims(1024)
    fixed = p.model_copy(update={"mrl": False})
    with pytest.raises(ValueError, match="only 384"):
        fixed.check_dims(256)


def test_profiles_without_lexical_or_search_blocks_get_the_defaults(tmp_path: Path) -> None:
    data = _default()
    for block in ("lexical", "search"):
        data["profiles"]["e5-small"].pop(block)
    p = load_config(_write(tmp_path, data)).profiles["e5-small"]
    assert p.lexical.enabled and p.lexical.fold and p.search.mode == "dense" and p.search.fusion == "weighted"
    assert p.lexical == load_config().profiles["e5-small"].lexical  # the shipped file spells out the defaults
