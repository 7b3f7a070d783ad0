"""The crawl wing: fetch pages from seed URLs politely and store them as WARC files."""

from pipeline.crawl.crawler import CrawlConfig, crawl, load_seeds
from pipeline.crawl.spec import STAGE, snapshot_label

__all__ = ["STAGE", "CrawlConfig", "crawl", "load_seeds", "snapshot_label"]
