"""Run ids, version ids and stage names become paths only after a strict check."""

import os

import pytest
from pydantic import TypeAdapter, ValidationError

from pipeline.errors import DataError
from pipeline.store.gc import collect_garbage
from pipeline.store.runs import LATEST, RunRecord, list_runs, resolve_run_id
from pipeline.store.versions import (
    RunId,
    Storage,
    check_run_id,
    check_version_id,
    load_version,
)
from tests.conftest import llmforge

GOOD_RUN_IDS = ["20261122-001500-3fa2c1", "cli-run", "a", "run_2.b", "R1.", "x" * 128]
BAD_RUN_IDS = [
    "../../x",
    "..",
    ".",
    ".hidden",
    "a/b",
    "a..b",
    "",
    "x" * 129,
    "a\\b",
    "a b",
    "-x",
    "run\n",
    "/etc",
    "é",
]


def snapshot(folder):
    return sorted(
        os.path.relpath(os.path.join(d, n), folder)
        for d, dirs, files in os.walk(folder)
        for n in dirs + files
    )


@pytest.mark.parametrize("run_id", GOOD_RUN_IDS)
def test_good_run_ids_pass(run_id):
    assert check_run_id(run_id) == run_id
    assert TypeAdapter(RunId).validate_python(run_id) == run_id


@pytest.mark.parametrize("run_id", BAD_RUN_IDS)
def test_bad_run_ids_fail_in_one_line_naming_the_id(run_id):
    with pytest.raises(DataError) as error:
        check_run_id(run_id)
    message = str(error.value)
    assert "\n" not in message and repr(run_id) in message
    with pytest.raises(ValidationError):  # the same rule in the pydantic type (UI forms)
        TypeAdapter(RunId).validate_python(run_id)


def test_run_id_pattern_is_in_the_json_schema():
    schema = TypeAdapter(RunId).json_schema()
    assert schema["pattern"].startswith("^") and schema["maxLength"] == 128


def test_version_ids_are_16_hex_digits():
    assert check_version_id("0123456789abcdef") == "0123456789abcdef"
    for bad in ["../../../etc", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0"]:
        with pytest.raises(DataError, match="invalid version id"):
            check_version_id(bad)


def test_paths_outside_the_root_are_refused_and_nothing_is_touched(tmp_path):
    root = tmp_path / "a" / "b" / "storage"
    storage = Storage.at(root)
    # A run.json where `runs/../../x` would point: the old code read (and wrote) it.
    outside = tmp_path / "a" / "b" / "x"
    outside.mkdir(parents=True)
    (outside / "run.json").write_text('{"run_id": "x", "status": "completed", "versions": {}}')
    before = snapshot(tmp_path)
    for call in (
        lambda: storage.run_folder("../../x"),
        lambda: storage.report_folder("../../x"),
        lambda: RunRecord.load(storage, "../../x"),
        lambda: RunRecord.create(storage, {}, run_id="../../x"),
        lambda: storage.version_folder("filter", "../../../x"),
        lambda: storage.version_folder("../x", "0123456789abcdef"),
        lambda: load_version(storage, "filter", "../../../x"),
        lambda: storage.lock_path("filter", "../x"),
        lambda: storage.work_dir("train", "../../x"),
    ):
        with pytest.raises(DataError, match="invalid"):
            call()
    assert snapshot(tmp_path) == before


def test_a_run_folder_symlinked_out_of_the_root_is_refused(tmp_path):
    storage = Storage.at(tmp_path / "storage")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "run.json").write_text('{"run_id": "sneaky", "status": "completed"}')
    runs = storage.runs.local_path()
    runs.mkdir(parents=True)
    (runs / "sneaky").symlink_to(elsewhere)
    with pytest.raises(DataError, match="outside"):
        RunRecord.load(storage, "sneaky")
    version = storage.versions.local_path("filter/0123456789abcdef")
    version.parent.mkdir(parents=True)
    version.symlink_to(elsewhere)
    with pytest.raises(DataError, match="outside"):
        storage.version_folder("filter", "0123456789abcdef")


def test_a_symlinked_runs_folder_is_still_allowed(tmp_path):
    """Putting runs/ or versions/ on another disk by a symlink is a choice, not an escape."""
    disk = tmp_path / "disk"
    (disk / "r1").mkdir(parents=True)
    (tmp_path / "storage").mkdir()
    (tmp_path / "storage" / "runs").symlink_to(disk)
    storage = Storage.at(tmp_path / "storage")
    assert storage.run_folder("r1") == storage.runs / "r1"


def test_gc_and_list_leave_foreign_folders_alone(tmp_path):
    storage = Storage.at(tmp_path)
    foreign = storage.versions.local_path("filter/my-backup")
    foreign.mkdir(parents=True)
    report = collect_garbage(storage)
    assert foreign.is_dir() and report.deleted_versions == []
    assert list_runs(storage) == []


def _runs(storage, *ids_and_starts):
    for run_id, started in ids_and_starts:
        record = RunRecord.create(storage, {}, run_id)
        record.data["started_at"] = started
        record.save()


def test_a_unique_prefix_or_latest_names_a_run_and_anything_else_fails_in_one_line(tmp_path):
    storage = Storage.at(tmp_path)
    _runs(
        storage,
        ("20261207-112901-aaaaaa", "2026-12-07T11:29:01+00:00"),
        ("20261207-112955-bbbbbb", "2026-12-07T11:29:55+00:00"),
        ("named-run", "2026-12-07T12:00:00+00:00"),  # started last, named by the user
    )
    assert resolve_run_id(storage, "20261207-112901-aaaaaa") == "20261207-112901-aaaaaa"
    assert resolve_run_id(storage, "20261207-11295") == "20261207-112955-bbbbbb"
    assert RunRecord.load(storage, "20261207-11290").run_id == "20261207-112901-aaaaaa"
    assert resolve_run_id(storage, LATEST) == "named-run"  # by start time, not by name
    with pytest.raises(DataError) as ambiguous:
        resolve_run_id(storage, "20261207-1129")
    assert str(ambiguous.value) == (
        f"run id '20261207-1129' is ambiguous under {storage.runs}: "
        "20261207-112955-bbbbbb, 20261207-112901-aaaaaa"
    )
    with pytest.raises(DataError, match=r"^run '2025' not found under "):
        resolve_run_id(storage, "2025")
    with pytest.raises(DataError, match="no runs under .*'latest' means none"):
        resolve_run_id(Storage.at(tmp_path / "empty"), LATEST)


def test_runs_list_shows_whole_ids_when_piped_at_80_columns(tmp_path):
    storage = Storage.at(tmp_path)
    long_id = "20261207-112901-aaaaaa-with-a-longer-suffix"
    _runs(storage, (long_id, "2026-12-07T11:29:01+00:00"))
    shown = llmforge("runs", "list", "--storage", str(tmp_path), env={"COLUMNS": "80"})
    assert shown.returncode == 0, shown.stderr
    assert long_id in shown.stdout
    show = llmforge("runs", "show", "20261207-1129", "--storage", str(tmp_path))
    assert show.returncode == 0 and long_id in show.stdout, show.stderr
