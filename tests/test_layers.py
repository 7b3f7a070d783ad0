"""Import layering, read from the source (every import, also those inside functions):

- pipeline/errors.py imports nothing of the project;
- pipeline/ never imports flows/ or Prefect: it is a plain data library;
- model/ never imports flows/ or Prefect, and of pipeline/ only the errors, the Stage record,
  the store, the token format (tokenize), document shard listing and the n-gram index it
  checks contamination with;
- the stage wings never import model/; in pipeline/ only the stage list and the config do.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WINGS = ("crawl", "extract", "filters", "dedup", "tokenize")
MODEL_MAY_IMPORT = (
    "pipeline.errors",
    "pipeline.stage",
    "pipeline.store",
    "pipeline.tokenize",
    "pipeline.documents",
    "pipeline.contamination",
    "pipeline.overrides",
)
MAY_IMPORT_MODEL = ("pipeline/stages.py", "pipeline/config.py")


def imported(source: str) -> set[str]:
    """Every module a source file imports (`from pipeline import stages` -> pipeline.stages)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def violations(path: str, modules: set[str]) -> list[str]:
    """What `path` (relative to the repository) imports against the rules above."""
    project = [m for m in modules if within(m, "pipeline", "model", "flows")]
    wrong = []
    if path == "pipeline/errors.py":
        wrong += project
    if path.startswith(("pipeline/", "model/")):
        wrong += [m for m in modules if within(m, "flows", "prefect")]
    if path.startswith("model/"):
        pipeline = [m for m in project if within(m, "pipeline") and m != "pipeline"]
        wrong += [m for m in pipeline if not within(m, *MODEL_MAY_IMPORT)]
    if path.startswith("pipeline/") and path not in MAY_IMPORT_MODEL:
        wrong += [m for m in modules if within(m, "model")]
    return sorted(set(wrong))


def sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize(
    "path", sources("pipeline", "model"), ids=lambda p: str(p.relative_to(ROOT))
)
def test_imports_follow_the_layers(path):
    relative = path.relative_to(ROOT).as_posix()
    assert violations(relative, imported(path.read_text())) == []


def test_the_wings_import_no_model_code():
    wing_files = [p for wing in WINGS for p in sources(f"pipeline/{wing}")]
    assert len(wing_files) > 30
    for path in wing_files:
        assert not any(within(m, "model") for m in imported(path.read_text())), path


def test_the_rules_catch_what_they_forbid():
    lazy = "def f():\n    from flows.data import run_data_stage\n"
    assert violations("pipeline/report/x.py", imported(lazy)) == [
        "flows.data",
        "flows.data.run_data_stage",
    ]
    assert violations("pipeline/errors.py", imported("import pipeline.stage\n")) == [
        "pipeline.stage"
    ]
    assert violations("model/x.py", imported("from pipeline import stages\n")) == [
        "pipeline.stages"
    ]
    assert violations("model/x.py", imported("from pipeline.store.runs import RunRecord\n")) == []
    assert violations("pipeline/dedup/x.py", imported("import model.gpt\n")) == ["model.gpt"]
    assert violations("pipeline/stages.py", imported("from model.stages import TRAIN\n")) == []
    assert violations("model/x.py", imported("import prefect\n")) == ["prefect"]
