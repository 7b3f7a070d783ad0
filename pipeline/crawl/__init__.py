"""The crawl wing: fetch pages from seed URLs politely and store them as WARC files."""

from pipeline.crawl.crawler import CrawlConfig, crawl, load_seeds

__all__ = ["CrawlConfig", "crawl", "load_seeds"]
