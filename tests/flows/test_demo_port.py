"""The demo's port is free again right after a crawl: its closed connections in TIME_WAIT must
not push the demo onto a random port (the port is in the seed URL, hence in every version id)."""

import httpx

from flows.cli import _port_free
from flows.server import free_port
from pipeline.sample_site.server import serve_site
from pipeline.sample_site.site import SampleSiteConfig, generate_site


def test_the_demo_port_is_free_right_after_serving_requests(tmp_path):
    site = tmp_path / "site"
    generate_site(site, SampleSiteConfig(seed=1))
    port = free_port()
    for _ in range(2):  # serve, close, and serve on the same port again at once
        assert _port_free(port)
        with serve_site(site, port=port) as base_url:
            assert base_url.endswith(f":{port}")
            for path in ("/", "/robots.txt", "/sitemap.xml"):
                httpx.get(base_url + path, timeout=10)  # server-side closes: TIME_WAIT
    with serve_site(site, port=port):
        assert not _port_free(port)  # a port someone listens on is still busy
