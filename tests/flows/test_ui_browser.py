"""The Prefect UI in headless Chromium: a run's stage subflows and artifacts are really shown.

Runs a small pipeline (up to tokenize) against the session's `prefect server start`, then opens
the run's `flow_run_url` the way a person would. The run graph is drawn on a canvas (no text
to query), so it is only screenshotted; the assertions read the "Subflow Runs" and "Artifacts"
tabs and the /artifacts page. Screenshots are saved in each test's tmp_path; `pytest -s` prints
their paths.
"""

import httpx
import pytest

from pipeline.config import load_config
from tests.flows.ui_helpers import chromium, local_page, require_browser, screenshot

DATA_STAGES = ["crawl", "extract", "filter", "dedup", "tokenize"]
RUN_ID = "ui-browser"
# The SPA fetches its data after load; generous for a loaded CI machine.
TIMEOUT_MS = 20_000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    require_browser()
    with chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def ui_run(browser, prefect_api, sample_site, tmp_path_factory):
    """One pipeline run recorded on the server (after `browser`: skip before the slow part)."""
    from flows.pipeline_flow import pipeline_flow

    base_url, _ = sample_site
    config = load_config(
        None,
        [
            f'run.storage_root="{tmp_path_factory.mktemp("storage")}"',
            "run.until=tokenize",
            f"crawl.seeds=['{base_url}/']",
            "crawl.delay_seconds=0",
            "crawl.allow_private_addresses=true",  # the sample site is on 127.0.0.1
            "crawl.per_host_concurrency=4",
            "tokenize.val_fraction=0.1",
        ],
    )
    record = pipeline_flow(config, RUN_ID)
    assert record["status"] == "completed"
    return record


def _shown(locator, what: str, failed: list[str]) -> None:
    """Wait for `locator` to be visible; on timeout say what is missing and which calls failed."""
    from playwright.sync_api import expect

    try:
        expect(locator).to_be_visible(timeout=TIMEOUT_MS)
    except AssertionError as exc:
        message = f"UI does not show {what}; failed requests: {failed or 'none'}"
        raise AssertionError(message) from exc


def _open_tab(page, name: str) -> None:
    page.get_by_role("tablist").get_by_text(name, exact=True).click(timeout=TIMEOUT_MS)


def test_ui_calls_this_server_api(prefect_api):
    """The UI's JavaScript calls the API URL the server reports (not the default port 4200)."""
    settings = httpx.get(f"{prefect_api['ui_url']}/ui-settings", timeout=10).json()
    assert settings["api_url"] == prefect_api["api_url"], (
        f"the UI at {prefect_api['ui_url']} calls {settings['api_url']}: "
        "start_server must pass PREFECT_UI_API_URL to `prefect server start`"
    )


def test_flow_run_page_shows_stage_subflows(browser, ui_run, prefect_api, tmp_path):
    url = ui_run["prefect"]["flow_run_url"]
    assert url.startswith(prefect_api["ui_url"] + "/"), url
    with local_page(browser) as (page, failed):
        page.goto(url, wait_until="networkidle")
        try:
            _shown(page.get_by_role("link", name="llmforge-pipeline"), "the parent flow", failed)
            screenshot(page, tmp_path / "flow-run-graph.png")
            _open_tab(page, "Subflow Runs")
            _shown(page.get_by_text(f"{len(DATA_STAGES)} Flow runs"), "5 subflow runs", failed)
            rows = page.locator(".state-list-item")  # one per subflow run
            for stage in DATA_STAGES:
                row = rows.filter(has=page.get_by_role("link", name=stage, exact=True))
                _shown(row.filter(has_text="Completed"), f"a completed {stage!r} subflow", failed)
        finally:
            screenshot(page, tmp_path / "flow-run-subflows.png")


def test_run_summary_artifact_is_rendered(browser, ui_run, tmp_path):
    with local_page(browser) as (page, failed):
        page.goto(ui_run["prefect"]["flow_run_url"], wait_until="networkidle")
        try:
            _open_tab(page, "Artifacts")
            card = page.get_by_text("run-summary", exact=True)
            _shown(card, "the run-summary artifact card", failed)
            screenshot(page, tmp_path / "flow-run-artifacts.png")
            card.click()
            heading = page.get_by_role("heading", name=f"llmforge run {RUN_ID}")
            _shown(heading, "the rendered run-summary markdown", failed)
            for stage, version in ui_run["versions"].items():
                cell = page.get_by_role("cell", name=version["version_id"], exact=True)
                _shown(cell, f"the {stage} version in the summary table", failed)
        finally:
            screenshot(page, tmp_path / "run-summary.png")


def test_artifacts_page_lists_stage_counts(browser, ui_run, prefect_api, tmp_path):
    with local_page(browser) as (page, failed):
        page.goto(f"{prefect_api['ui_url']}/artifacts", wait_until="networkidle")
        try:
            for key in [f"{stage}-counts" for stage in DATA_STAGES] + ["run-summary"]:
                _shown(page.get_by_text(key, exact=True), f"artifact key {key!r}", failed)
        finally:
            screenshot(page, tmp_path / "artifacts.png")
