"""Token dataset loading: batches, seeded order, exact cursor resume, the fixed val set."""

import json

import numpy as np
import pytest
import torch

from model.data import TokenLoader, read_token_manifest, validation_tokens
from pipeline.errors import DataError
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


def _epoch(loader: TokenLoader) -> list[list[int]]:
    """The x rows of the rest of the loader's current epoch, one window per row."""
    epoch, rows = loader.epoch, []
    while loader.epoch == epoch:
        rows += loader.next_batch()[0].tolist()
    return rows


def test_batches_are_shifted_windows(small_tokens):
    loader = TokenLoader(small_tokens / "train", batch_size=2, context_length=4, seed=0)
    x, y = loader.next_batch()
    assert x.shape == y.shape == (2, 4) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_a_batch_draws_windows_from_across_the_split(tmp_path):
    # 40 docs of 10 tokens in 20 row groups of 2 docs: a batch of 8 windows of 4 tokens holds
    # 32 tokens, ~3 docs if it were cut from one stretch of the stream.
    root = write_token_dataset(tmp_path, _docs(40, 10), _docs(2, 10), row_group_size=2)
    loader = TokenLoader(root / "train", batch_size=8, context_length=4, seed=0)
    docs = {token // 100 for token in loader.next_batch()[0][:, 0].tolist()}
    assert len(docs) >= 6 and max(docs) - min(docs) >= 20


@pytest.mark.parametrize("group_tokens", [1 << 26, 16])  # one group; groups of ~16 tokens
def test_epoch_uses_every_window_once_in_seeded_order(small_tokens, group_tokens):
    def loader(seed: int) -> TokenLoader:
        return TokenLoader(small_tokens / "train", 1, 4, seed=seed, group_tokens=group_tokens)

    first = loader(0)
    rows = _epoch(first)
    seen = [t for row in rows for t in row]
    assert len(seen) == len(set(seen))  # no window twice, windows do not overlap
    groups = len(first.groups(0))
    assert (groups > 1) == (group_tokens == 16)
    assert len(seen) >= 80 - groups * 2 * 4  # each group loses < 2T tokens to its edges
    assert [row[0] for row in rows] != sorted(row[0] for row in rows)  # shuffled
    assert (first.epoch, first.group, first.window) == (1, 0, 0)
    assert _epoch(loader(0)) == rows  # deterministic
    assert _epoch(loader(1)) != rows
    assert _epoch(first) != rows  # the next epoch has its own order and offsets


@pytest.mark.parametrize("group_tokens", [1 << 26, 16])
def test_cursor_state_resumes_exactly_across_epochs(small_tokens, group_tokens):
    def loader() -> TokenLoader:
        return TokenLoader(small_tokens / "train", 2, 4, seed=3, group_tokens=group_tokens)

    first = loader()
    _stream(first, 7)
    state = json.loads(json.dumps(first.state_dict()))  # plain ints, checkpoint-safe
    expected = _stream(first, 8)  # crosses into epoch 1
    assert first.epoch >= 1
    fresh = loader()
    fresh.load_state_dict(state)
    for (x, y), (ex, ey) in zip(_stream(fresh, 8), expected, strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_cursor_from_another_loader(small_tokens, caplog):
    loader = TokenLoader(small_tokens / "train", batch_size=2, context_length=4, seed=3)
    with pytest.raises(DataError, match="group_tokens=16 but this loader uses 67108864"):
        loader.load_state_dict({"epoch": 0, "group": 0, "window": 0, "group_tokens": 16})
    with pytest.raises(DataError, match="is outside this dataset"):
        loader.load_state_dict({"epoch": 0, "group": 1, "window": 0, "group_tokens": 1 << 26})
    loader.load_state_dict({"epoch": 2, "position": 1, "offset": 7})  # the sequential loader's
    assert "older sequential loader" in caplog.text
    assert (loader.epoch, loader.group, loader.window) == (2, 0, 0)


def test_tokens_stay_uint16_until_the_batch(small_tokens):
    loader = TokenLoader(small_tokens / "train", batch_size=2, context_length=4, seed=0)
    loader.next_batch()
    assert {chunk.dtype for chunk in loader._tokens.values()} == {np.dtype(np.uint16)}


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


def test_ranks_split_each_global_batch_across_groups(small_tokens):
    # Groups of ~16 tokens hold 2-3 windows of T=4, so global batches of 4 span groups.
    def loader(batch_size: int, **rank) -> TokenLoader:
        return TokenLoader(small_tokens / "train", batch_size, 4, seed=5, group_tokens=16, **rank)

    one = loader(4)
    ranks = [loader(2, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(12):  # ~2.5 epochs
        epoch = one.epoch
        x, y = one.next_batch()
        parts = [r.next_batch() for r in ranks]
        assert torch.equal(x, torch.cat([p[0] for p in parts]))
        assert torch.equal(y, torch.cat([p[1] for p in parts]))
        if one.epoch == epoch:  # within an epoch no two windows share a token
            assert not set(parts[0][0].flatten().tolist()) & set(parts[1][0].flatten().tolist())
        assert ranks[0].state_dict() == ranks[1].state_dict() == one.state_dict()
    assert one.epoch >= 2


def test_a_dataset_in_the_store_reads_as_the_local_one(small_tokens):
    """A rank on another machine reads the version's URL (here fsspec's in-memory store)
    through Folder: the same manifest, batches, cursor and val set as the local folder."""
    from pipeline.store.fs import Folder

    store = Folder(f"memory://llmforge-test/{small_tokens.name}/versions/tokenize/v1")
    store.put_tree(small_tokens, last=("manifest.json",))
    try:
        local, remote = read_token_manifest(small_tokens), read_token_manifest(store.url)
        assert remote.path == store and remote.version_id == local.version_id
        assert remote.tokens_train == local.tokens_train
        loaders = [
            TokenLoader(root, 2, 4, seed=5, rank=1, world_size=2)
            for root in (small_tokens / "train", store / "train")
        ]
        assert loaders[1].shards[0].startswith("memory://")
        for _ in range(7):
            (xa, ya), (xb, yb) = (loader.next_batch() for loader in loaders)
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert loaders[0].state_dict() == loaders[1].state_dict()
        val = validation_tokens(small_tokens, 20), validation_tokens(store.url, 20)
        assert val[0].identity() == val[1].identity()
        with pytest.raises(DataError, match="memory://.*/missing/train: no such file"):
            TokenLoader(store.url.replace("/v1", "/missing") + "/train", 2, 4)
    finally:
        store.remove()
