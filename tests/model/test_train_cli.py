"""`python -m model.train_cli --set` reads values as `llmforge --set` does."""

import pytest

from model.train_cli import main, train_config
from pipeline.config import load_config

# TOML-only spellings: an underscore in a number, `none` for None, a bare word, a float.
SETS = ["max_steps=1_000", "d_model=none", "device=cpu", "lr=3e-4", "compile=false"]


def test_sets_parse_as_the_pipeline_cli_parses_them():
    cfg = train_config(SETS)
    assert cfg == load_config(None, [f"train.{item}" for item in SETS]).train
    assert cfg.max_steps == 1000 and cfg.d_model is None and cfg.device == "cpu"


@pytest.mark.parametrize(
    ("item", "message"),
    [("max_steps", "expected key=value"), ("max_stepz=3", "max_stepz: Extra inputs")],
)
def test_bad_sets_end_with_one_line(item, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--tokens", str(tmp_path), "--out", str(tmp_path / "out"), "--set", item])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
