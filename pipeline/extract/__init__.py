"""The extract wing: main text out of WARC responses (trafilatura), or documents other tools
wrote (Parquet/JSONL: `sources.py`), into document shards."""

from pipeline.extract.extractor import ExtractConfig, run
from pipeline.extract.spec import STAGE

__all__ = ["STAGE", "ExtractConfig", "run"]
