"""Token dataset loading: batches, seeded order, exact cursor resume, the fixed val set."""

import json

import numpy as np
import pytest
import torch

from model.data import TokenLoader, read_token_manifest, validation_tokens
from pipeline.documents import DataError
from tests.model.conftest import write_token_dataset


def _docs(n_docs: int, length: int) -> list[list[int]]:
    """Doc i is `length` tokens with values 100*i .. 100*i+length-1: every token unique."""
    return [[100 * i + j for j in range(length)] for i in range(n_docs)]


@pytest.fixture
def small_tokens(tmp_path):
    # 20 docs x 4 tokens = 80 train tokens in 2 shards of 2-doc row groups; 10 batches of B*T=8.
    return write_token_dataset(tmp_path, _docs(20, 4), _docs(5, 7), shards=2, row_group_size=2)


def _stream(loader: TokenLoader, batches: int) -> list[torch.Tensor]:
    return [loader.next_batch() for _ in range(batches)]


def test_batches_are_shifted_windows(small_tokens):
    loader = TokenLoader(small_tokens / "train", batch_size=2, context_length=4, seed=0)
    x, y = loader.next_batch()
    assert x.shape == y.shape == (2, 4) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert y[0, -1] == x[1, 0]  # rows are consecutive windows of the same stream
    x2, _ = loader.next_batch()
    assert y[1, -1] == x2[0, 0]  # and batches continue it


def test_epoch_visits_every_token_once_in_seeded_order(small_tokens):
    loader = TokenLoader(small_tokens / "train", batch_size=2, context_length=4, seed=0)
    seen = torch.cat([x.flatten() for x, _ in _stream(loader, 10)]).tolist()
    assert sorted(seen) == sorted(t for d in _docs(20, 4) for t in d)
    assert seen != [t for d in _docs(20, 4) for t in d]  # shuffled, not file order
    assert loader.epoch == 1 and loader.position == 0 and loader.offset == 0

    again = TokenLoader(small_tokens / "train", batch_size=2, context_length=4, seed=0)
    other = TokenLoader(small_tokens / "train", batch_size=2, context_length=4, seed=1)
    first = [x for x, _ in _stream(again, 10)]
    assert torch.equal(torch.cat(first).flatten(), torch.tensor(seen))
    assert not torch.equal(torch.cat([x for x, _ in _stream(other, 10)]), torch.cat(first))


def test_cursor_state_resumes_exactly_across_epochs(small_tokens):
    loader = TokenLoader(small_tokens / "train", batch_size=2, context_length=4, seed=3)
    _stream(loader, 7)
    state = json.loads(json.dumps(loader.state_dict()))  # plain ints, checkpoint-safe
    expected = _stream(loader, 8)  # crosses into epoch 1
    fresh = TokenLoader(small_tokens / "train", batch_size=2, context_length=4, seed=3)
    fresh.load_state_dict(state)
    for (x, y), (ex, ey) in zip(_stream(fresh, 8), expected, strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_tokens_stay_uint16_until_the_batch(small_tokens):
    loader = TokenLoader(small_tokens / "train", batch_size=2, context_length=4, seed=0)
    loader.next_batch()
    assert {chunk.dtype for chunk in loader._cache.values()} == {np.dtype(np.uint16)}


def test_too_few_tokens_is_a_clear_error(tmp_path):
    root = write_token_dataset(tmp_path, _docs(3, 5), _docs(1, 5))
    with pytest.raises(DataError, match=r"15 tokens, fewer than one batch .* = 20"):
        TokenLoader(root / "train", batch_size=4, context_length=4)


def test_token_id_beyond_vocab_names_the_shard(small_tokens):
    loader = TokenLoader(small_tokens / "train", batch_size=2, context_length=4, vocab_size=500)
    with pytest.raises(DataError, match=r"part-0000\d\.parquet: row group \d+ has token id"):
        _stream(loader, 10)


def test_manifest_is_read_defensively(tmp_path, small_tokens):
    info = read_token_manifest(small_tokens)
    assert (info.version_id, info.tokenizer, info.vocab_size, info.eot_token) == (
        "tokens-test-v1",
        "gpt2",
        50257,
        50256,
    )
    assert info.tokens_train == 80
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "manifest.json").write_text(json.dumps({"version_id": "v0"}))
    bare = read_token_manifest(tmp_path / "bare")
    assert (bare.version_id, bare.vocab_size, bare.tokens_train) == ("v0", 50257, None)
    (tmp_path / "bare" / "manifest.json").write_text("{oops")
    with pytest.raises(DataError, match="manifest.json: not a valid"):
        read_token_manifest(tmp_path / "bare")
    with pytest.raises(DataError, match="not found"):
        read_token_manifest(tmp_path / "missing")


def test_validation_set_is_the_first_tokens_and_identified(small_tokens):
    val = validation_tokens(small_tokens, eval_tokens=10)
    assert val.tokens.tolist() == [t for d in _docs(5, 7) for t in d][:10]
    ident = val.identity()
    assert ident["version_id"] == "tokens-test-v1" and ident["tokens"] == 10
    assert validation_tokens(small_tokens, eval_tokens=10).sha256 == val.sha256
    assert validation_tokens(small_tokens, eval_tokens=11).sha256 != val.sha256
    assert validation_tokens(small_tokens, eval_tokens=10_000).tokens.size == 35  # all there is
