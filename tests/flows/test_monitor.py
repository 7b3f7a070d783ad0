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
