"""The tokenize wing: documents into token shards (tiktoken: GPT-2, or a BPE trained on the
train split), split into train and val."""

from pipeline.tokenize.spec import STAGE
from pipeline.tokenize.tokenizer import TokenizeConfig, check_token_dataset, get_encoding, run

__all__ = ["STAGE", "TokenizeConfig", "check_token_dataset", "get_encoding", "run"]
