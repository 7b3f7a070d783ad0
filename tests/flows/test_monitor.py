"""Progress artifacts update from any thread (the crawler's loop) on the run's own server."""

import threading

import httpx
from prefect import flow

from flows.monitor import Progress


@flow
def _progress_from_a_thread() -> str:
    progress = Progress("thread-progress", "updated from another thread")
    worker = threading.Thread(target=progress.update, args=(5, 10), kwargs={"force": True})
    worker.start()
    worker.join()
    return str(progress._id)


def test_progress_updates_from_another_thread(prefect_api):
    artifact_id = _progress_from_a_thread()
    artifact = httpx.get(f"{prefect_api['api_url']}/artifacts/{artifact_id}", timeout=30).json()
    assert artifact["type"] == "progress" and artifact["data"] == 50.0


def test_loss_table_has_a_row_for_every_validated_step(tmp_path):
    """Val passes at steps 0/20/40, train rows logged at 1, 11, 21, ...: each val number shows."""
    import json

    from flows.monitor import loss_markdown

    rows = [{"step": s, "val_loss": 10.0 - s / 10, "val_bpb": 3.0 - s / 100} for s in (0, 20, 40)]
    rows += [{"step": s, "loss": 9.0 - s / 10, "tokens_per_s": 1000.0} for s in range(1, 41, 10)]
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = [line for line in loss_markdown(metrics, tmp_path / "none.png").splitlines()
             if line.startswith("| ") and line[2].isdigit()]  # fmt: skip
    assert table[0] == "| 0 |  | 3.0000 | 10.0000 |  |"
    assert "| 20 |  | 2.8000 | 8.0000 |  |" in table
    assert "| 11 | 7.9000 |  |  | 1000 |" in table
    assert [int(line.split("|")[1]) for line in table] == [0, 1, 11, 20, 21, 31, 40]
