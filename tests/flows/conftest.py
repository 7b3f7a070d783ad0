"""A real local Prefect server for flow tests (the temporary one drops task runs)."""

import logging
import os

import pytest

from flows.server import start_server, stop_server
from pipeline.sample_site.server import serve_site
from pipeline.sample_site.site import SampleSiteConfig, generate_site
from pipeline.store.versions import Storage


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """Start `prefect server start` on 127.0.0.1 once; point the Prefect client at it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    storage = Storage.at(tmp_path_factory.mktemp("prefect-server"))
    state = start_server(storage)
    # The environment too: Dask worker processes read it, not this process's settings context.
    os.environ["PREFECT_API_URL"] = state["api_url"]
    with temporary_settings(updates={PREFECT_API_URL: state["api_url"]}):
        yield state
        for handler in logging.getLogger("prefect.flow_runs").handlers:
            handler.flush()  # send buffered run logs before the server goes away
    os.environ.pop("PREFECT_API_URL", None)
    stop_server(storage)


@pytest.fixture(scope="session")
def sample_site(tmp_path_factory):
    site_dir = tmp_path_factory.mktemp("site")
    truth = generate_site(site_dir, SampleSiteConfig(seed=3))
    with serve_site(site_dir) as base_url:
        yield base_url, truth


def site_config(root, base_url, *overrides):
    """A run config whose crawl reads the sample site on 127.0.0.1 at full speed."""
    from pipeline.config import load_config

    return load_config(
        None,
        [
            f'run.storage_root="{root}"',
            f"crawl.seeds=['{base_url}/']",
            "crawl.delay_seconds=0",
            "crawl.allow_private_addresses=true",  # the sample site is on 127.0.0.1
            *overrides,
        ],
    )


# The data half, as most flow tests run it.
DATA_HALF = ("run.until=tokenize", "crawl.per_host_concurrency=4", "tokenize.val_fraction=0.1")


def crawl_warcs(root, base_url, target, run_id):
    """Crawl a site once and copy its WARC files into `target` (prefixed by `run_id`), so
    later runs read identical bytes (a crawl's timestamps differ between crawls)."""
    import shutil

    from flows.pipeline_flow import pipeline_flow

    record = pipeline_flow(site_config(root, base_url, "run.until=crawl"), run_id)
    version = record["versions"]["crawl"]["version_id"]
    target.mkdir(parents=True, exist_ok=True)
    for warc in (root / "versions" / "crawl" / version / "warc").glob("*.warc.gz"):
        shutil.copy(warc, target / f"{run_id}-{warc.name}")
    return target
