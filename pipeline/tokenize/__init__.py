"""The tokenize wing: documents into GPT-2 token shards (tiktoken), split into train and val."""

from pipeline.tokenize.spec import STAGE
from pipeline.tokenize.tokenizer import TokenizeConfig, check_token_dataset, get_encoding, run

__all__ = ["STAGE", "TokenizeConfig", "check_token_dataset", "get_encoding", "run"]
