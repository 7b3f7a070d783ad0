"""Config loading: TOML files, --set overrides, one-line errors naming the key."""

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from pipeline.overrides import parse_value

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    load_config(path)


def test_overrides_reach_nested_stage_configs():
    cfg = load_config(
        None,
        [
            "filter.gopher_quality.min_doc_words=100",
            "filter.fineweb.char_duplicates_ratio=none",
            "crawl.seeds=['http://127.0.0.1:1/']",
            "train.preset=tiny",
            "run.until=tokenize",
        ],
    )
    assert cfg.filter.gopher_quality.min_doc_words == 100
    assert cfg.filter.fineweb.char_duplicates_ratio is None
    assert cfg.crawl.seeds == ["http://127.0.0.1:1/"]
    assert cfg.train.preset == "tiny" and cfg.run.until == "tokenize"


def test_parse_value_types():
    assert parse_value("3") == 3 and parse_value("0.5") == 0.5 and parse_value("true") is True
    assert parse_value("hello") == "hello" and parse_value('"x y"') == "x y"
    assert parse_value("[1, 2]") == [1, 2] and parse_value("null") is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["filter.gopher_quality.min_doc_wordz=3"],
            "filter.gopher_quality.min_doc_wordz: unknown key",
        ),
        (["bogus=1"], "bogus: unknown key"),
        (["crawl.max_pages=many"], "crawl.max_pages: Input should be a valid integer"),
        (["run.until=deploy"], "run.until: Input should be"),
        (["crawl.max_pages"], "expected key=value"),
        (["crawl.max_pages=3", "crawl.max_pages.x=1"], "crawl.max_pages.x: 'max_pages' is a value"),
    ],
)
def test_bad_keys_and_types_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.toml: no such file"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[crawl\nseeds = 1")
    with pytest.raises(ConfigError, match="broken.toml: invalid TOML"):
        load_config(broken)
    typo = tmp_path / "typo.toml"
    typo.write_text("[dedup]\nnum_perms = 64\n")
    with pytest.raises(ConfigError, match="dedup.num_perms: unknown key"):
        load_config(typo)


def test_snapshot_label_formats_dates():
    from datetime import UTC, datetime

    from pipeline.crawl import snapshot_label

    monday = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    assert snapshot_label("%G-W%V", monday) == "2026-W48"
    assert snapshot_label("fixed", monday) == "fixed"
