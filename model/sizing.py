"""Fit a run to its budget: how many steps (RunPlan), and for preset "auto" which depth.

A budget is wall-clock seconds (TrainConfig.max_seconds) or training FLOPs (max_flops, counted
as tokens x model.gpt.flops_per_token). With `fit_schedule_to_budget` the run's step count is
planned up front so that warmup and cosine decay end when the budget does: a FLOP budget
exactly (steps = max_flops // (tokens_per_step x flops_per_token)), a time budget from the
speed measured on the first (rehearsal) steps plus the measured cost of a validation pass and
a checkpoint write, times how many of each the plan will do. `max_steps` stays an upper bound:
the plan is the fewest steps any limit allows, and says which limit that was. The plan is
stored in the checkpoint, so a resumed run follows it to the same step (and bitwise the same
weights) instead of measuring again.

Preset "auto" picks the depth of the modern family (model.config.modern_config) whose budget
buys about TOKENS_PER_PARAM training tokens per parameter, at most MAX_EPOCHS passes over the
training split. model/train.py measures the speeds and passes them in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from model.config import ModelConfig, TrainConfig
from model.gpt import flops_per_token, matmul_params

# Warmup is capped at this fraction of the planned steps, so a short budget still spends most
# of its steps at and after the peak lr (our choice; nanoGPT's shakespeare recipe warms up for
# 100 of 5,000 steps, 2%, and a 10% cap leaves cfg.warmup_steps alone for any plan >= 10x it).
WARMUP_MAX_FRACTION = 0.1
# Rehearsal steps before training proper (model/train.py probe_speed): the first ones are not
# timed (allocator, oneDNN/cuBLAS kernel choice, torch.compile's first graph), the rest are, up
# to PROBE_STEPS or PROBE_MAX_FRACTION of the budget, whichever comes first (at least one).
PROBE_WARMUP_STEPS = 2
PROBE_STEPS = 5
PROBE_MAX_FRACTION = 0.05
# A planned time budget may overrun by this fraction before the run stops anyway (then with
# its schedule unfinished): speed measured on a few steps can be off when the machine's load
# changes. Our choice: 10% keeps comparisons at "the same budget" honest to about that much.
BUDGET_OVERRUN = 0.1
# A time plan is timed again on the run's own steps at the end of warmup (or after this many
# steps, if later), and its step count fixed anew: a few rehearsal steps misjudge the speed
# (bench/budget.py, 900 s on a 2-core EPYC Zen 5: rehearsal 0.648 s/step, the run's steps ~0.6,
# so a planned run ended after 812 s). Until the decay starts, the lr does not depend on the
# step count, so changing it there leaves the schedule smooth.
RETIME_MIN_STEPS = 20

# Tokens per parameter (matmul parameters, as model.gpt.matmul_params: the blocks plus the
# lm_head, not the input embedding lookup, which costs no FLOPs) that preset "auto" aims for.
# Measured with bench/budget.py (300 s, 2-core EPYC Zen 3, fp32, trained 8,192-token BPE, 1.3M
# train tokens of real pages): depth 1 trained 4.0 tokens/param -> 2.477 val bits/byte, depth 2
# 0.73 -> 2.494, depth 3 0.14 -> 2.654. The optimum lies between depths 1 and 2; 2 (their
# geometric middle, rounded) picks depth 1 at 300 s and deeper models as the budget grows.
# Chinchilla's 20 (Hoffmann et al. 2022) was measured for far larger models and budgets.
TOKENS_PER_PARAM = 2.0
# Passes over the training split "auto" plans for at most: Muennighoff et al. 2023 (Scaling
# Data-Constrained Language Models) find up to ~4 epochs of repeated data about as good as new.
MAX_EPOCHS = 4.0
MAX_DEPTH = 32  # the deepest model "auto" considers (d_model 2048)
SIZING_STEPS = 3  # timed steps per measured depth ("auto" with max_seconds), after one untimed


@dataclass(frozen=True)
class RunPlan:
    """How long a run trains and its lr schedule; measured numbers where it measured them."""

    steps: int  # optimizer updates the run makes (resume included)
    warmup_steps: int  # lr_at's warmup
    decay_steps: int  # lr_at's total_steps: the update from which the lr is at its floor
    limited_by: str  # "max_steps", "max_seconds" or "max_flops": what set `steps`
    reason: str  # the arithmetic, in words
    fitted: bool  # the schedule was fitted to the budget (fit_schedule_to_budget)
    budget_s: float | None = None
    max_flops: float | None = None
    tokens_per_s: float | None = None  # measured on the rehearsal steps
    step_s: float | None = None
    eval_s: float | None = None  # one validation pass
    checkpoint_s: float | None = None  # one checkpoint write
    probe_steps: int | None = None  # timed rehearsal steps
    retimed_at: int | None = None  # the step at which the run's own speed re-fixed `steps`

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunPlan:
        return cls(**data)

    def describe(self) -> str:
        """One line: "budget 300 s: planned 1,234 steps (5,678 tok/s measured)"."""
        if not self.fitted:
            if self.budget_s is None and self.max_flops is None:
                return f"{self.steps:,} steps (max_steps schedule)"
            return f"{_budget(self)}: schedule of max_steps, stops at the budget (fit off)"
        speed = f" ({self.tokens_per_s:,.0f} tok/s measured)" if self.tokens_per_s else ""
        cap = " (capped by max_steps)" if self.limited_by == "max_steps" else ""
        steps = f"{self.steps:,} step{'' if self.steps == 1 else 's'}"
        return f"{_budget(self)}: planned {steps}{speed}{cap}"


def describe_plan(data: dict[str, Any]) -> str:
    """RunPlan.describe of a plan as stored (checkpoint, metrics row, train.json)."""
    return RunPlan.from_dict(data).describe()


def _budget(plan: RunPlan) -> str:
    parts = []
    if plan.budget_s is not None:
        parts.append(f"{plan.budget_s:g} s")
    if plan.max_flops is not None:
        parts.append(f"{plan.max_flops:.3g} FLOPs")
    return "budget " + " and ".join(parts)


def step_schedule(cfg: TrainConfig, stop_steps: int | None = None) -> RunPlan:
    """The schedule of max_steps as today: the lr follows cfg.warmup_steps and cfg.max_steps
    and the run stops at `stop_steps` (a FLOP budget), at max_seconds, or at max_steps."""
    steps = cfg.max_steps if stop_steps is None else max(1, min(cfg.max_steps, stop_steps))
    budget = cfg.max_seconds is not None or cfg.max_flops is not None
    return RunPlan(
        steps=steps,
        warmup_steps=cfg.warmup_steps,
        decay_steps=cfg.max_steps,
        limited_by="max_flops" if steps < cfg.max_steps else "max_steps",
        reason="the max_steps schedule" + (", cut at the budget" if budget else ""),
        fitted=False,
        budget_s=cfg.max_seconds,
        max_flops=cfg.max_flops,
    )


def flops_steps(max_flops: float, tokens_per_step: int, flops_per_token: int) -> int:
    """Whole steps a FLOP budget pays for (integer arithmetic: no rounding at exact fits)."""
    return int(max_flops) // (tokens_per_step * flops_per_token)


def seconds_steps(
    remaining_s: float,
    step_s: float,
    eval_s: float,
    checkpoint_s: float,
    eval_interval: int,
    checkpoint_interval: int,
    max_steps: int,
    start: int = 0,
) -> int:
    """The most steps s <= max_steps whose cost fits in `remaining_s` after step `start` (its
    evaluation and checkpoint already paid): s steps, plus a validation pass at every multiple
    of eval_interval in (start, start + s] and at the end, and the same for checkpoints. 0 when
    not even one step fits."""

    def every(s: int, interval: int) -> int:
        end = start + s
        return end // interval - start // interval + (1 if end % interval else 0)

    def cost(s: int) -> float:
        evals, saves = every(s, eval_interval), every(s, checkpoint_interval)
        return s * step_s + evals * eval_s + saves * checkpoint_s

    lo, hi = 0, max_steps  # cost(lo) fits (0 costs nothing); the answer is in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if cost(mid) <= remaining_s else (lo, mid - 1)
    return lo


def tightest(limits: dict[str, int]) -> str:
    """The limit allowing the fewest steps; on a tie max_steps, the one the user set."""
    return min(limits, key=lambda name: (limits[name], name != "max_steps"))


def fitted_plan(cfg: TrainConfig, limits: dict[str, int], reasons: dict[str, str], **measured):
    """The plan of the tightest limit (steps by "max_steps", "max_seconds", "max_flops"):
    warmup capped at WARMUP_MAX_FRACTION of it, the cosine at its floor on the last step."""
    limited_by = tightest(limits)
    steps = max(1, limits[limited_by])
    others = [f"{name} allows {limits[name]:,}" for name in limits if name != limited_by]
    reason = reasons.get(limited_by, f"max_steps {cfg.max_steps:,}")
    if others:
        reason += f" ({', '.join(others)})"
    return RunPlan(
        steps=steps,
        warmup_steps=min(cfg.warmup_steps, int(WARMUP_MAX_FRACTION * steps)),
        decay_steps=steps - 1,  # lr_at(steps - 1) is min_lr: the last update ends the decay
        limited_by=limited_by,
        reason=reason,
        fitted=True,
        budget_s=cfg.max_seconds,
        max_flops=cfg.max_flops,
        **measured,
    )


def retime_step(plan: RunPlan) -> int | None:
    """The step at which a measured time plan is timed again (None: never), so that decay
    starts on the corrected step count; too late in a short plan, and it is left alone."""
    if not plan.fitted or plan.step_s is None or plan.retimed_at is not None:
        return None
    at = max(plan.warmup_steps, RETIME_MIN_STEPS)
    return at if 2 * at <= plan.steps else None


def retimed_plan(
    plan: RunPlan, step: int, limits: dict[str, int], step_s: float, timed: int
) -> RunPlan:
    """`plan` with its step count fixed anew at `step`, by the tightest of `limits` (total
    steps by "max_steps", "max_flops", and "max_seconds": what fits the time left at the speed
    of the run's own `timed` steps, `step_s` each)."""
    limited_by = tightest(limits)
    steps = max(step + 1, limits[limited_by])
    reason = (
        f"{plan.reason}; re-timed at step {step:,} on the run's own steps ({step_s:.3g} s each "
        f"over {timed}): {steps:,} steps"
    )
    return dataclasses.replace(
        plan,
        steps=steps,
        decay_steps=steps - 1,
        limited_by=limited_by,
        reason=reason,
        tokens_per_s=plan.tokens_per_s * plan.step_s / step_s if plan.tokens_per_s else None,
        step_s=step_s,
        retimed_at=step,
    )


# --- preset "auto": the depth for the budget ---------------------------------------------


@dataclass(frozen=True)
class Sizing:
    """The depth preset "auto" chose, and why (stored in the checkpoint and train.json)."""

    depth: int
    params: int  # matmul parameters (see TOKENS_PER_PARAM)
    tokens: int  # training tokens the budget buys at this depth
    target_tokens: int  # min(TOKENS_PER_PARAM x params, MAX_EPOCHS x train tokens)
    tokens_per_param: float  # tokens / params
    epochs: float  # tokens / train tokens
    budget: str  # what set the tokens: "max_steps", "max_flops", "max_seconds"
    flops_per_s: dict[int, float]  # measured training FLOP/s by depth (max_seconds only)
    reason: str

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["flops_per_s"] = {str(k): v for k, v in self.flops_per_s.items()}  # JSON keys
        return data


def _budget_tokens(
    cfg: TrainConfig, model_cfg: ModelConfig, tokens_per_step: int, flops_per_s: float | None
) -> tuple[int, str]:
    """Training tokens a run of this architecture gets under cfg's limits, and which bound."""
    fpt = flops_per_token(model_cfg)
    steps = {"max_steps": cfg.max_steps}
    if cfg.max_flops is not None:
        steps["max_flops"] = flops_steps(cfg.max_flops, tokens_per_step, fpt)
    if cfg.max_seconds is not None and flops_per_s:
        steps["max_seconds"] = int(cfg.max_seconds * flops_per_s / fpt) // tokens_per_step
    limit = min(steps, key=lambda name: (steps[name], name != "max_steps"))
    return max(1, steps[limit]) * tokens_per_step, limit


def choose_depth(
    cfg: TrainConfig,
    vocab_size: int,
    train_tokens: int,
    tokens_per_step: int,
    measure: Callable[[ModelConfig], float] | None = None,
    max_depth: int = MAX_DEPTH,
) -> Sizing:
    """The deepest modern model whose budget still buys its target tokens.

    The tokens a depth gets fall with depth and its target rises, so the depths that meet
    their target are 1..d: d is chosen (depth 1 if even it falls short). A time budget needs
    the hardware's speed: `measure(model_cfg)` gives training FLOP/s at a depth; it measures
    depth 1, then the depth that speed picks, up to 3 times, since small models use the
    hardware less well (their speed would under-size a larger one).
    """

    def arch(depth: int) -> ModelConfig:
        return cfg.model_config_for(vocab_size, depth=depth)

    def pick(flops_per_s: float | None) -> int:
        chosen = 1
        for depth in range(1, max_depth + 1):
            tokens, _ = _budget_tokens(cfg, arch(depth), tokens_per_step, flops_per_s)
            if tokens < _target(arch(depth), train_tokens):
                break
            chosen = depth
        return chosen

    measured: dict[int, float] = {}
    speed = None
    depth = pick(None)
    if cfg.max_seconds is not None:
        if measure is None:
            raise ValueError("preset auto with max_seconds needs a speed measurement")
        depth = 1
        for _ in range(3):
            if depth not in measured:
                measured[depth] = measure(arch(depth))
            speed = measured[depth]
            chosen = pick(speed)
            if chosen == depth:
                break
            depth = chosen
    model_cfg = arch(depth)
    params = matmul_params(model_cfg)
    tokens, limit = _budget_tokens(cfg, model_cfg, tokens_per_step, speed)
    target = _target(model_cfg, train_tokens)
    epochs = tokens / train_tokens if train_tokens else math.inf
    speed_note = f" at {speed / 1e9:.3g} GFLOP/s measured" if speed else ""
    if tokens < target:
        why = (
            f"depth 1, the smallest: its {params:,} parameters get {tokens:,} tokens "
            f"({limit}{speed_note}), short of the {target:,} target"
        )
    else:
        why = (
            f"depth {depth}: {params:,} parameters x {tokens / params:.1f} tokens/param = "
            f"{tokens:,} tokens ({limit}{speed_note}, {epochs:.2f} epochs) meet the target "
            f"{target:,} = min({TOKENS_PER_PARAM:g} x params, {MAX_EPOCHS:g} epochs)"
        )
        if depth < max_depth:
            deeper = arch(depth + 1)
            more, _ = _budget_tokens(cfg, deeper, tokens_per_step, speed)
            why += f"; depth {depth + 1} would get {more:,} of {_target(deeper, train_tokens):,}"
    return Sizing(
        depth=depth,
        params=params,
        tokens=tokens,
        target_tokens=target,
        tokens_per_param=tokens / params,
        epochs=epochs,
        budget=limit,
        flops_per_s=measured,
        reason=why,
    )


def _target(model_cfg: ModelConfig, train_tokens: int) -> int:
    by_params = TOKENS_PER_PARAM * matmul_params(model_cfg)
    return int(min(by_params, MAX_EPOCHS * train_tokens))
