"""Data-parallel training on CPU with gloo: 2 processes train like 1 at twice the batch, rank 0
alone writes, checkpoints hold every rank's cursor and RNG, and resume is exact."""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.multiprocessing as mp

from model.checkpoint import load_checkpoint, rank_state
from model.data import TokenLoader
from model.distributed import DistContext, all_reduce_mean, cleanup, init_distributed
from model.train import train
from pipeline.errors import DataError
from tests.model.conftest import small_cfg, write_token_dataset

TORCHRUN = Path(sys.executable).with_name("torchrun")
ROOT = Path(__file__).resolve().parents[2]
# Per-rank batch 2 and 2 micro-batches (exercises no_sync): 2 ranks = 1 process at batch 4.
DDP_RUN = dict(batch_size=2, grad_accum_steps=2, max_steps=8, warmup_steps=2, eval_tokens=512)
DDP_RUN |= dict(eval_interval=4, checkpoint_interval=4, log_interval=2)
# Constant lr (no warmup, no decay) so a 4-step run resumed to 8 equals a straight 8-step run.
RESUME_RUN = dict(batch_size=2, dropout=0.1, warmup_steps=0, min_lr_ratio=1.0, eval_tokens=512)
RESUME_RUN |= dict(eval_interval=4, checkpoint_interval=4)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _losses(run: Path, key: str = "loss") -> list[float]:
    return [row[key] for row in _metrics(run) if key in row]


def test_ranks_take_disjoint_blocks_of_one_global_batch(tmp_path):
    docs = [[(7 * i + j) % 1000 for j in range(3 + i % 23)] for i in range(60)]  # ~840 tokens
    tokens = write_token_dataset(tmp_path / "tok", docs, docs[:5], row_group_size=4)
    for with_counts in (True, False):  # chunk lengths from num_tokens, or by decoding
        if not with_counts:
            for path in (tokens / "train").glob("*.parquet"):
                table = pq.read_table(path).drop_columns(["num_tokens"])
                pq.write_table(table, path, row_group_size=4)
        one = TokenLoader(tokens / "train", 4, 8, seed=3)
        ranks = [TokenLoader(tokens / "train", 2, 8, seed=3, rank=r, world_size=2) for r in (0, 1)]
        for _ in range(60):  # ~2.5 epochs, windows across row groups and epochs
            x, y = one.next_batch()
            parts = [loader.next_batch() for loader in ranks]
            assert torch.equal(x, torch.cat([p[0] for p in parts]))
            assert torch.equal(y, torch.cat([p[1] for p in parts]))
            assert ranks[0].state_dict() == ranks[1].state_dict() == one.state_dict()
        assert one.epoch >= 2
    few = write_token_dataset(tmp_path / "few", [[1] * 40], [[1] * 9], shards=1) / "train"
    TokenLoader(few, 4, 8)  # one process needs B*(T+1) = 36 tokens
    with pytest.raises(DataError, match=r"40 tokens, .* N\*B\*\(T\+1\) = 2\*4\*\(8\+1\) = 72"):
        TokenLoader(few, 4, 8, rank=1, world_size=2)


def test_without_torchrun_the_context_is_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed("cpu") == DistContext(device=torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "1")
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
    assert not torch.distributed.is_initialized()
    value = torch.tensor([3.0])
    assert all_reduce_mean(value) is value and value.item() == 3.0
    old = {"rng": {"torch": 1}, "data": {"epoch": 0}}  # a checkpoint from before `ranks`
    assert rank_state(old, 0, 1) == old
    with pytest.raises(DataError, match="world_size=1 but this run has world_size=2"):
        rank_state(old, 0, 2)


@pytest.fixture(scope="module")
def torchrun_run(shakespeare_tokens, tmp_path_factory):
    """8 steps of `torchrun --nproc_per_node=2 -m model.train_cli` (per-rank batch 2)."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    sets = small_cfg(**DDP_RUN).model_dump(exclude_defaults=True)
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "model.train_cli"]
    command += ["--tokens", str(shakespeare_tokens), "--out", str(out)]
    command += [f"--set={key}={json.dumps(value)}" for key, value in sets.items()]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_torchrun_trains_one_model_and_rank0_alone_writes(torchrun_run):
    out, summary = torchrun_run
    assert summary["world_size"] == 2 and summary["steps"] == 8
    assert summary["tokens_seen"] == 8 * 2 * 2 * 2 * 32  # steps x ranks x B x accum x T
    rows = _metrics(out)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 9))  # one writer
    assert [r["step"] for r in rows if "val_loss" in r] == [0, 4, 8]
    losses = _losses(out)
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0] - 0.3
    assert _losses(out, "val_loss")[-1] < _losses(out, "val_loss")[0] - 0.3
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint.pt",
        "loss_curve.png",
        "metrics.jsonl",
        "train.json",
    ]
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 8 and state["world_size"] == 2 and len(state["ranks"]) == 2
    assert not any(key.startswith(("module.", "_orig_mod.")) for key in state["model"])
    first, second = state["ranks"]
    assert first["data"] == second["data"] == state["data"]  # one global cursor
    assert not torch.equal(first["rng"]["torch"], second["rng"]["torch"])  # seed + rank


@pytest.mark.slow
def test_two_processes_equal_one_process_at_twice_the_batch(
    torchrun_run, shakespeare_tokens, tmp_path
):
    out, _ = torchrun_run
    single = small_cfg(**(DDP_RUN | {"batch_size": 4}))
    train(single, shakespeare_tokens, tmp_path)
    assert _losses(out) == pytest.approx(_losses(tmp_path), rel=1e-6)
    assert _losses(out, "val_loss") == pytest.approx(_losses(tmp_path, "val_loss"), rel=1e-6)
    a = load_checkpoint(out / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.slow
def test_resume_with_another_world_size_fails_naming_both(
    torchrun_run, shakespeare_tokens, tmp_path
):
    out, _ = torchrun_run
    shutil.copy(out / "checkpoint.pt", tmp_path / "checkpoint.pt")
    with pytest.raises(DataError, match="world_size=2 but this run has world_size=1"):
        train(small_cfg(**DDP_RUN), shakespeare_tokens, tmp_path, resume=True)


def _resume_worker(rank: int, port: int, tokens: Path, root: Path) -> None:
    """One of 2 ranks: 4 steps, resume to 8, then a straight 8-step run for comparison."""
    env = dict(RANK=rank, LOCAL_RANK=rank, WORLD_SIZE=2, MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    os.environ.update({key: str(value) for key, value in env.items()})
    torch.set_num_threads(1)  # 2 processes on a 2-core machine
    try:
        train(small_cfg(**RESUME_RUN, max_steps=4), tokens, root / "resumed")
        train(small_cfg(**RESUME_RUN, max_steps=8), tokens, root / "resumed", resume=True)
        train(small_cfg(**RESUME_RUN, max_steps=8), tokens, root / "straight")
    finally:
        cleanup()


@pytest.mark.slow
def test_two_process_resume_continues_exactly(shakespeare_tokens, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.spawn(
        _resume_worker, args=(port, shakespeare_tokens, tmp_path), nprocs=2, join=False
    )
    deadline = time.monotonic() + 240
    while not context.join(timeout=2):  # raises if a rank failed
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("2-process training did not finish in 240 s")
    summary = json.loads((tmp_path / "resumed" / "train.json").read_text())
    assert summary["resumed_from"] == 4 and summary["steps"] == 8 and summary["world_size"] == 2
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "straight")  # bitwise
    assert len(_losses(tmp_path / "straight")) == 8
    a = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [r["data"] for r in a["ranks"]] == [r["data"] for r in b["ranks"]]
