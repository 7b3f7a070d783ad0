"""The command line as a person uses it: runs commands, one stage, one-line errors."""

from pathlib import Path

import pytest

from flows.pipeline_flow import pipeline_flow
from tests.conftest import llmforge, shared_data
from tests.flows.conftest import site_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recorded(prefect_api, sample_site, tmp_path_factory):
    base_url, _ = sample_site
    root = tmp_path_factory.mktemp("cli-storage")
    config = site_config(root, base_url, "run.until=filter")
    return root, pipeline_flow(config, "cli-run")


def test_runs_list_show_lineage_report_and_gc(recorded):
    root, record = recorded
    listed = llmforge("runs", "list", "--storage", str(root))
    assert listed.returncode == 0 and "cli-run" in listed.stdout
    shown = llmforge("runs", "show", "cli-run", "--storage", str(root))
    assert shown.returncode == 0
    assert record["versions"]["filter"]["version_id"] in shown.stdout
    assert "/runs/flow-run/" in shown.stdout  # the Prefect flow run URL
    lineage = llmforge("runs", "lineage", "cli-run", "--storage", str(root))
    assert lineage.returncode == 0 and "seeds" in lineage.stdout and "crawl" in lineage.stdout
    report = llmforge("runs", "report", "cli-run", "--storage", str(root))
    assert (
        report.returncode == 0 and (root / "runs" / "cli-run" / "report" / "report.html").exists()
    )
    gc = llmforge("runs", "gc", "--dry-run", "--storage", str(root))
    assert gc.returncode == 0 and (root / "versions" / "crawl").exists()


def test_stage_on_a_path_and_bad_input_errors(recorded, tmp_path):
    root, record = recorded
    extract = root / "versions" / "extract" / record["versions"]["extract"]["version_id"]
    done = llmforge(
        "stage",
        "filter",
        "--input",
        str(extract),
        "--output",
        str(tmp_path / "out"),
        "--set",
        "gopher_quality.min_doc_words=60",
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "manifest.json").exists() and (tmp_path / "out" / "data").is_dir()
    cases = [
        (
            (
                "stage",
                "filter",
                "--input",
                str(tmp_path / "nope"),
                "--output",
                str(tmp_path / "o2"),
            ),
            "nope: no such file or directory",
        ),
        (
            (
                "stage",
                "extract",
                "--input",
                str(shared_data("warc", "warcio", "test", "data", "example-trunc.warc")),
                "--output",
                str(tmp_path / "o3"),
            ),
            "example-trunc.warc",
        ),
        (
            ("run", "--set", "filter.gopher_quality.min_doc_wordz=3", "--no-server"),
            "filter.gopher_quality.min_doc_wordz: unknown key",
        ),
        (
            (
                "run",
                "--set",
                "crawl.seeds=['ftp://example.org/']",
                "--set",
                f'run.storage_root="{tmp_path / "s"}"',
                "--no-server",
            ),
            "ftp://example.org/",
        ),
        (("runs", "show", "missing-run", "--storage", str(root)), "run 'missing-run' not found"),
    ]
    for args, message in cases:
        result = llmforge(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1, (args, result.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (
            args,
            result.stderr[-2000:],
        )


def test_help_says_what_the_tool_does_not_how_it_imports():
    shown = llmforge("--help", env={"COLUMNS": "100"})
    assert shown.returncode == 0, shown.stderr
    assert "Turn web pages into a trained, evaluated GPT" in shown.stdout
    assert "imported" not in shown.stdout and "flows/server.py" not in shown.stdout


def test_stage_rerun_takes_short_keys_and_shows_in_runs_show(recorded, tmp_path):
    """`--set min_doc_words=...` means the stage's key with --run as with --input, and the
    rerun is listed by `runs show`."""
    root, record = recorded
    config = tmp_path / "root.toml"
    config.write_text(f'[run]\nstorage_root = "{root}"\n')
    rerun = llmforge(
        "stage", "filter", "--run", "cli-run", "--config", str(config),
        "--set", "gopher_quality.min_doc_words=200",
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "rerun of filter" in rerun.stdout
    shown = llmforge("runs", "show", "cli-run", "--storage", str(root))
    assert shown.returncode == 0, shown.stderr
    reruns = shown.stdout.split("single-stage reruns", 1)[1]
    old = record["versions"]["filter"]["version_id"]
    (line,) = [row for row in reruns.splitlines() if " filter " in row]
    assert old not in line and line.rstrip().rstrip("│").rstrip().endswith("no")
