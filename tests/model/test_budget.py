"""Budgeted training: the planned step count, the finished schedule, resume keeping the plan,
the old cut-at-the-budget behaviour, preset auto's depth, and val bits per byte.

Time budgets run on a fake clock that only moves when a training step (1 s) or a validation
pass (0.5 s) runs, so every plan here is exact arithmetic, never a timing.
"""

import json
import logging

import numpy as np
import pytest
import tiktoken
import torch

import model.train as train_module
from model.checkpoint import load_checkpoint, load_model
from model.config import TrainConfig
from model.distributed import DistContext
from model.evaluate import bits_per_byte, token_losses
from model.gpt import flops_per_token
from model.optim import lr_at
from model.precision import setup_precision
from model.sizing import RETIME_MIN_STEPS, TOKENS_PER_PARAM, choose_depth, seconds_steps
from model.stages import describe_train
from model.train import distributed_val_metrics, token_byte_lengths, train
from tests.model.conftest import small_cfg

TOKENS_PER_STEP = 4 * 32  # small_cfg: batch 4 x context 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    """A clock that a training step moves by 1 s and a validation pass by 0.5 s."""
    fake = FakeClock()
    forward_backward = train_module.forward_backward
    val_metrics = train_module.distributed_val_metrics

    def step(*args, **kwargs):
        fake.now += 1.0
        return forward_backward(*args, **kwargs)

    def evaluate(*args, **kwargs):
        fake.now += 0.5
        return val_metrics(*args, **kwargs)

    monkeypatch.setattr(train_module, "forward_backward", step)
    monkeypatch.setattr(train_module, "distributed_val_metrics", evaluate)
    return fake


def rows(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def lrs(out) -> list[float]:
    return [r["lr"] for r in rows(out) if "loss" in r]


def flops_cfg(**overrides) -> TrainConfig:
    base = dict(max_steps=1000, eval_interval=100, checkpoint_interval=100, eval_tokens=128)
    return small_cfg(**(base | overrides))


def test_flop_budget_plans_the_exact_steps_and_ends_the_decay(shakespeare_tokens, tmp_path):
    base = flops_cfg()
    fpt = flops_per_token(base.model_config_for(50257))
    budget = 7 * TOKENS_PER_STEP * fpt + TOKENS_PER_STEP * fpt - 1  # 7 steps, not quite 8
    summary = train(base.model_copy(update={"max_flops": budget}), shakespeare_tokens, tmp_path)
    assert summary["steps"] == summary["planned_steps"] == 7
    assert summary["stopped"] == "max_flops" and summary["schedule_finished"]
    plan = summary["plan"]
    assert plan["limited_by"] == "max_flops" and plan["fitted"]
    assert plan["warmup_steps"] == 0  # 5 capped at 10% of 7 steps
    assert "7 steps" in plan["reason"] and summary["plan_summary"].endswith("planned 7 steps")
    got = lrs(tmp_path)
    assert len(got) == 7 and got[-1] == base.lr * base.min_lr_ratio  # the floor, at the end
    assert all(a > b for a, b in zip(got, got[1:], strict=False))  # cosine all the way
    assert summary["tokens_seen"] * fpt <= budget
    assert [r["plan"]["steps"] for r in rows(tmp_path) if "plan" in r] == [7]
    assert json.loads((tmp_path / "train.json").read_text())["plan"] == plan
    assert load_checkpoint(tmp_path / "checkpoint.pt")["plan"] == plan


def test_fit_off_cuts_the_step_schedule_at_the_budget(shakespeare_tokens, tmp_path):
    base = flops_cfg(fit_schedule_to_budget=False)
    budget = 7 * TOKENS_PER_STEP * flops_per_token(base.model_config_for(50257))
    summary = train(base.model_copy(update={"max_flops": budget}), shakespeare_tokens, tmp_path)
    assert summary["steps"] == 7 and summary["stopped"] == "max_flops"
    assert not summary["schedule_finished"] and not summary["plan"]["fitted"]
    # The lr of a 1000-step schedule (warmup 5), stopped at step 7: far from its floor.
    assert lrs(tmp_path) == [lr_at(s, base) for s in range(7)]
    assert lrs(tmp_path)[-1] > 0.9 * base.lr


def seconds_cfg(**overrides) -> TrainConfig:
    base = dict(max_steps=1000, max_seconds=12, eval_interval=5, checkpoint_interval=5)
    base |= {"eval_tokens": 128}
    return small_cfg(**(base | overrides))


# On the fake clock: the step-0 val pass 0.5 s; rehearsal: 2 untimed steps + 1 timed (the
# timing stops at 5% of 12 s = 0.6 s), 3 s; checkpoint writes 0 s. Left: 12 - 3.5 = 8.5 s, and
# s steps cost s + 0.5 * ceil(s / 5): 7 steps cost 8 (8 would cost 9).
PLANNED = 7


def test_time_budget_plans_steps_that_finish_the_schedule(
    shakespeare_tokens, tmp_path, clock, caplog
):
    assert seconds_steps(8.5, 1.0, 0.5, 0.0, 5, 5, 1000) == PLANNED
    cfg = seconds_cfg()
    with caplog.at_level(logging.INFO, logger="model.train"):
        summary = train(cfg, shakespeare_tokens, tmp_path, clock=clock)
    assert "budget 12 s: planned 7 steps (128 tok/s measured); max_seconds 12: " in caplog.text
    described = describe_train(summary)
    assert described.startswith("val bpb ") and "planned 7 steps" in described
    plan = summary["plan"]
    assert summary["steps"] == plan["steps"] == PLANNED and summary["schedule_finished"]
    assert summary["stopped"] == "max_seconds"
    assert plan["step_s"] == 1.0 and plan["eval_s"] == 0.5 and plan["probe_steps"] == 1
    assert plan["tokens_per_s"] == TOKENS_PER_STEP and plan["warmup_steps"] == 0
    assert summary["plan_summary"] == "budget 12 s: planned 7 steps (128 tok/s measured)"
    assert lrs(tmp_path)[-1] == cfg.lr * cfg.min_lr_ratio
    assert summary["elapsed_s"] == pytest.approx(11.5)  # 3.5 + 7 steps + 2 val passes


def test_rehearsal_steps_leave_no_trace(shakespeare_tokens, tmp_path, clock):
    """The time-budgeted run trains bitwise like a FLOP-budgeted run of the same plan (which
    rehearses nothing): the rehearsal's updates, data and random numbers are all undone."""
    timed = train(seconds_cfg(dropout=0.1), shakespeare_tokens, tmp_path / "a", clock=clock)
    fpt = flops_per_token(seconds_cfg().model_config_for(50257))
    flops = seconds_cfg(dropout=0.1, max_seconds=None, max_flops=PLANNED * TOKENS_PER_STEP * fpt)
    counted = train(flops, shakespeare_tokens, tmp_path / "b")
    assert counted["steps"] == timed["steps"] == PLANNED
    assert [r["loss"] for r in rows(tmp_path / "a") if "loss" in r] == [
        r["loss"] for r in rows(tmp_path / "b") if "loss" in r
    ]
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_keeps_the_plan_and_trains_bitwise_alike(shakespeare_tokens, tmp_path, clock):
    cfg = seconds_cfg(dropout=0.1)
    straight = train(cfg, shakespeare_tokens, tmp_path / "a", clock=clock)

    def crash(row):
        if row.get("step") == 6 and "loss" in row:
            raise KeyboardInterrupt

    clock.now = 0.0
    with pytest.raises(KeyboardInterrupt):
        interrupted = cfg.model_copy(update={"log_interval": 1})
        train(interrupted, shakespeare_tokens, tmp_path / "b", on_log=crash, clock=clock)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["step"] == 5
    calls = {"n": 0}
    counting = train_module.forward_backward

    def count(*args, **kwargs):
        calls["n"] += 1
        return counting(*args, **kwargs)

    train_module.forward_backward = count  # the fixture's monkeypatch restores the original
    clock.now = 100.0  # another machine, another clock: the plan must not be measured again
    resumed = train(cfg, shakespeare_tokens, tmp_path / "b", resume=True, clock=clock)
    assert calls["n"] == PLANNED - 5  # no rehearsal steps
    assert resumed["plan"] == straight["plan"] and resumed["steps"] == PLANNED
    assert [r["loss"] for r in rows(tmp_path / "b") if "loss" in r] == [
        r["loss"] for r in rows(tmp_path / "a") if "loss" in r
    ]
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["final_val_bpb"] == straight["final_val_bpb"]


def test_the_plan_is_retimed_on_the_runs_own_steps_and_still_ends_with_the_budget(
    shakespeare_tokens, tmp_path, clock, monkeypatch
):
    """Rehearsal steps cost 1 s on the fake clock, the run's own steps 0.5 s: the plan made
    from the rehearsal would end at about half the budget; re-timed at step RETIME_MIN_STEPS it
    runs twice the steps and still ends the decay (and the budget) on its last step."""
    step_cost = {"s": 1.0}
    forward_backward = train_module.forward_backward  # the fixture's: +1 s per call

    def cheaper(*args, **kwargs):
        out = forward_backward(*args, **kwargs)
        clock.now -= 1.0 - step_cost["s"]
        return out

    def rehearse_then_speed_up(*args, **kwargs):
        out = time_steps(*args, **kwargs)
        step_cost["s"] = 0.5  # training proper is faster than the rehearsal measured
        return out

    time_steps = train_module.time_steps
    monkeypatch.setattr(train_module, "forward_backward", cheaper)
    monkeypatch.setattr(train_module, "time_steps", rehearse_then_speed_up)
    cfg = seconds_cfg(max_seconds=60, eval_interval=1000, checkpoint_interval=1000)
    summary = train(cfg, shakespeare_tokens, tmp_path, clock=clock)
    plans = [r["plan"] for r in rows(tmp_path) if "plan" in r]
    first, final = plans[0], plans[-1]
    assert first["retimed_at"] is None and final["retimed_at"] == RETIME_MIN_STEPS
    assert final == summary["plan"] and final["step_s"] == 0.5 and first["step_s"] == 1.0
    # 60 s - 0.5 (step-0 val) - 5 (rehearsal: 2 untimed + 3 timed steps, 5% of the budget)
    # leave 54.5 s: 54 steps of 1 s and the final val pass.
    assert first["steps"] == 54
    # At step 20 (10 s later): 44.5 s left for 0.5 s steps and the final val pass: 88 more.
    assert summary["steps"] == final["steps"] == RETIME_MIN_STEPS + 88
    assert summary["schedule_finished"] and final["decay_steps"] == final["steps"] - 1
    assert lrs(tmp_path)[-1] == cfg.lr * cfg.min_lr_ratio
    assert summary["elapsed_s"] == pytest.approx(60.0)
    assert (
        "re-timed at step 20 on the run's own steps (0.5 s each over 20): 108 steps"
        in (final["reason"])
    )


def auto_cfg(**overrides) -> TrainConfig:
    base = dict(preset="auto", context_length=32, batch_size=4, max_steps=10**9)
    return TrainConfig(**(base | overrides))


def test_auto_picks_a_deeper_model_for_a_bigger_budget():
    small, big = (
        choose_depth(auto_cfg(max_flops=flops), 50257, 10**12, TOKENS_PER_STEP)
        for flops in (1e16, 1e18)
    )
    assert 1 <= small.depth < big.depth
    for sizing in (small, big):
        assert sizing.tokens >= sizing.target_tokens == int(TOKENS_PER_PARAM * sizing.params)
        assert f"depth {sizing.depth}: " in sizing.reason and "would get" in sizing.reason
    # Little data: the target is capped at 4 epochs, so the same budget buys a deeper model.
    scarce = choose_depth(auto_cfg(max_flops=1e16), 50257, 10**6, TOKENS_PER_STEP)
    assert scarce.depth > small.depth and scarce.target_tokens == 4 * 10**6
    # Too small a budget for any depth: the smallest, saying so.
    tiny = choose_depth(auto_cfg(max_flops=1e12), 50257, 10**12, TOKENS_PER_STEP)
    assert tiny.depth == 1 and "smallest" in tiny.reason


def test_auto_with_a_time_budget_measures_the_depths_it_considers():
    seen = []

    def measure(arch):
        seen.append(arch.n_layers)
        return 1e12  # FLOP/s, the same at every depth

    by_time = choose_depth(auto_cfg(max_seconds=1e4), 50257, 10**12, TOKENS_PER_STEP, measure)
    by_flops = choose_depth(auto_cfg(max_flops=1e16), 50257, 10**12, TOKENS_PER_STEP)
    assert by_time.depth == by_flops.depth and seen == [1, by_time.depth]
    assert by_time.flops_per_s == {1: 1e12, by_time.depth: 1e12}
    assert "GFLOP/s measured" in by_time.reason


def test_measured_speed_is_flops_per_second_of_a_step(clock):
    cfg = auto_cfg(max_seconds=60, precision="fp32")
    arch = cfg.model_config_for(50257, depth=1)
    speed = train_module.measure_flops(arch, cfg, setup_precision("cpu", "fp32"), clock)
    assert speed == flops_per_token(arch) * TOKENS_PER_STEP  # one fake second per step
    assert clock.now == 1 + train_module.SIZING_STEPS  # one untimed step, then the timed ones


def test_auto_records_its_depth_and_resume_keeps_it(shakespeare_tokens, tmp_path, monkeypatch):
    cfg = auto_cfg(max_flops=1.5e10, eval_tokens=128, lr=3e-3, warmup_steps=2)  # 5 steps
    cfg = cfg.model_copy(update={"checkpoint_interval": 2, "log_interval": 1, "precision": "fp32"})

    def crash(row):
        if row.get("step") == 3 and "loss" in row:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, shakespeare_tokens, tmp_path, on_log=crash)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    depth = state["sizing"]["depth"]
    assert state["model_config"]["n_layers"] == depth and state["model_config"]["d_model"] == 64

    def refuse(*args, **kwargs):
        raise AssertionError("a resumed auto run must not choose its depth again")

    monkeypatch.setattr(train_module, "choose_depth", refuse)
    summary = train(cfg, shakespeare_tokens, tmp_path, resume=True)
    saved = json.loads((tmp_path / "train.json").read_text())
    assert saved["depth"] == summary["depth"] == depth == 1
    assert "smallest" in saved["sizing_reason"] and saved["sizing"]["params"] > 0
    assert saved["model_config"] == state["model_config"] and summary["resumed_from"] == 2


def test_val_bits_per_byte_in_metrics_and_summary(trained_run):
    out, summary, _ = trained_run
    val_rows = [r for r in rows(out) if "val_loss" in r]
    assert all(0.5 < r["val_bpb"] < 20 for r in val_rows)
    assert summary["final_val_bpb"] == val_rows[-1]["val_bpb"]
    assert json.loads((out / "train.json").read_text())["final_val_bpb"] == summary["final_val_bpb"]


def test_val_bpb_equals_the_evaluation_formula(trained_run, shakespeare_tokens):
    """Byte lengths summed per token == bytes of the decoded targets (EOT left out)."""
    out, _, _ = trained_run
    model, _ = load_model(out / "checkpoint.pt")
    enc = tiktoken.get_encoding("gpt2")
    precision = setup_precision("cpu", "fp32")
    val = train_module.validation_tokens(shakespeare_tokens, 1024)
    nll, targets = token_losses(model, val.tokens, 32, 4, precision)
    expected = bits_per_byte(nll, targets, enc.decode_bytes, enc.eot_token)
    lengths = token_byte_lengths(enc, 50257)
    ctx = DistContext()
    loss, bpb = distributed_val_metrics(model, val, 32, 4, precision, ctx, lengths, enc.eot_token)
    assert bpb == pytest.approx(expected, rel=1e-12) and loss == pytest.approx(nll.mean())
    assert lengths[enc.encode_ordinary(" the")[0]] == 4 and np.all(lengths[:256] >= 1)
