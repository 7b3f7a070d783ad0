"""Compare two recorded runs: config differences, dataset versions, metrics, loss curves.

    from pipeline.store.compare import compare_runs, plot_loss_curves
    result = compare_runs(Storage.at("storage"), "20261122-001500-3fa2c1", "20261123-...")
    result.refusal  # None, or one line saying why the metrics are not comparable

Metrics measured on different validation tokens do not compare: each eval.json names its
validation set by the sha256 of its token ids (`val_set_sha256`), and when the two differ (or
a run's eval.json does not say) `refusal` explains it and the CLI shows no metrics unless told
`--allow-different-val`. Configs are compared as flattened dotted keys (`train.lr`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import DataError
from pipeline.stages import names
from pipeline.store.fs import Folder, atomic_path
from pipeline.store.runs import RunRecord
from pipeline.store.versions import Storage

METRICS_FILE = "metrics.jsonl"  # per-step train and val loss, written by model/train.py
# (label, where: "eval" or "train", key path in that JSON)
# Bits per byte first: unlike loss per token it compares runs with different tokenizers.
METRICS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("bits per byte", "eval", ("bits_per_byte",)),
    ("val loss", "eval", ("val_loss",)),
    ("perplexity", "eval", ("perplexity",)),
    ("hellaswag acc", "eval", ("hellaswag", "acc")),
    ("hellaswag acc_norm", "eval", ("hellaswag", "acc_norm")),
    ("hellaswag acc_char", "eval", ("hellaswag", "acc_char")),
    # here: each lm-evaluation-harness number the runs have (harness_metrics)
    ("train val bpb", "train", ("final_val_bpb",)),
    ("train steps", "train", ("steps",)),
    ("planned steps", "train", ("planned_steps",)),
    ("plan", "train", ("plan_summary",)),
    ("tokens/s", "train", ("tokens_per_s",)),
)


@dataclass
class RunSide:
    """What one run recorded: its config, dataset versions and model results."""

    run_id: str
    config: dict[str, Any]
    versions: dict[str, str]  # stage -> version id
    eval: dict[str, Any] | None = None  # eval.json of its evaluate version
    train: dict[str, Any] | None = None  # train.json of its train version
    metrics: Folder | None = None  # its train version, when it has a metrics.jsonl

    @property
    def val_sha256(self) -> str | None:
        if not self.eval:
            return None
        return self.eval.get("val_set_sha256") or (self.eval.get("val_set") or {}).get("sha256")


@dataclass
class Comparison:
    a: RunSide
    b: RunSide
    config_diffs: list[tuple[str, Any, Any]]  # (dotted key, a's value, b's value)
    datasets: list[tuple[str, str | None, str | None]]  # (stage, a's version, b's version)
    metrics: list[tuple[str, Any, Any]] = field(default_factory=list)
    refusal: str | None = None  # why the metrics are not comparable


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}; lists and scalars are leaves."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, inner in value.items():
        out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_diffs(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Keys whose values differ (a key only one side has shows None on the other)."""
    flat_a, flat_b = flatten(a), flatten(b)
    keys = sorted(set(flat_a) | set(flat_b))
    return [(k, flat_a.get(k), flat_b.get(k)) for k in keys if flat_a.get(k) != flat_b.get(k)]


def _json_in(storage: Storage, stage: str, version_id: str | None, name: str) -> dict | None:
    if version_id is None:
        return None
    folder = storage.version_folder(stage, version_id)
    return folder.read_json(name) if folder.is_file(name) else None


def load_side(storage: Storage, run_id: str) -> RunSide:
    record = RunRecord.load(storage, run_id)
    versions = {
        stage: summary["version_id"]
        for stage, summary in (record.data.get("versions") or {}).items()
        if isinstance(summary, dict) and "version_id" in summary
    }
    side = RunSide(run_id, record.data.get("config") or {}, versions)
    side.eval = _json_in(storage, "evaluate", versions.get("evaluate"), "eval.json")
    side.train = _json_in(storage, "train", versions.get("train"), "train.json")
    if "train" in versions:
        folder = storage.version_folder("train", versions["train"])
        side.metrics = folder if folder.is_file(METRICS_FILE) else None
    return side


def val_refusal(a: RunSide, b: RunSide) -> str | None:
    """One line saying why a's and b's metrics do not compare, or None when they do."""
    if a.eval is None or b.eval is None:
        return None  # nothing to refuse: the missing side shows no metrics
    for side in (a, b):
        if side.val_sha256 is None:
            return (
                f"run {side.run_id}'s eval.json does not name its validation set (re-evaluate it)"
            )
    if a.val_sha256 != b.val_sha256:
        ident_a, ident_b = a.eval.get("val_set") or {}, b.eval.get("val_set") or {}
        return (
            f"different validation sets: run {a.run_id} was evaluated on {a.val_sha256} "
            f"({ident_a.get('tokens')} tokens of {ident_a.get('version_id')}), run {b.run_id} "
            f"on {b.val_sha256} ({ident_b.get('tokens')} tokens of {ident_b.get('version_id')})"
        )
    return None


def value_at(data: Any, path: tuple[str, ...]) -> Any:
    """data[path[0]][path[1]]..., or None where a key is missing."""
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _metric(side: RunSide, where: str, path: tuple[str, ...]) -> Any:
    return value_at(side.eval if where == "eval" else side.train, path)


def _harness_scores(values: dict[str, Any]) -> list[str]:
    """The metric names of one task's harness result: its numbers but n and the stderrs."""
    return [
        metric
        for metric, value in values.items()
        if isinstance(value, int | float) and metric != "n" and not metric.endswith("_stderr")
    ]


def _harness_tasks(evaluation: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    tasks = ((evaluation or {}).get("lm_eval") or {}).get("tasks") or {}
    return {task: values for task, values in tasks.items() if isinstance(values, dict)}


def harness_metrics(evaluation: dict[str, Any] | None) -> list[tuple[str, tuple[str, ...]]]:
    """(label, key path in eval.json) of each lm-evaluation-harness number an eval.json holds
    (model/harness.py): "lm_eval hellaswag acc" at lm_eval.tasks.hellaswag.acc; no stderrs."""
    return [
        (f"lm_eval {task} {metric}", ("lm_eval", "tasks", task, metric))
        for task, values in _harness_tasks(evaluation).items()
        for metric in _harness_scores(values)
    ]


def harness_lines(evaluation: dict[str, Any] | None) -> list[str]:
    """One line per harness task: "lm_eval hellaswag (200): acc 0.265 ± 0.031, acc_norm ..."."""
    lines = []
    for task, values in _harness_tasks(evaluation).items():
        shown = []
        for metric in _harness_scores(values):
            stderr = values.get(f"{metric}_stderr")
            spread = f" ± {stderr:.3f}" if isinstance(stderr, int | float) else ""
            shown.append(f"{metric} {values[metric]:.3f}{spread}")
        lines.append(f"lm_eval {task} ({values.get('n', '?')}): {', '.join(shown)}")
    return lines


def metric_rows(a: RunSide, b: RunSide) -> list[tuple[str, str, tuple[str, ...]]]:
    """METRICS with the harness's numbers of either run after our HellaSwag scorer's."""
    harness = dict.fromkeys(harness_metrics(a.eval) + harness_metrics(b.eval))  # ordered union
    cut = [label for label, _, _ in METRICS].index("hellaswag acc_char") + 1
    return [*METRICS[:cut], *((label, "eval", path) for label, path in harness), *METRICS[cut:]]


def compare_runs(storage: Storage, run_a: str, run_b: str) -> Comparison:
    """Both runs side by side; metrics are filled in even when refused (the caller decides)."""
    a, b = load_side(storage, run_a), load_side(storage, run_b)
    stages = [s for s in names() if s in a.versions or s in b.versions]
    return Comparison(
        a,
        b,
        config_diffs(a.config, b.config),
        [(s, a.versions.get(s), b.versions.get(s)) for s in stages],
        [(label, _metric(a, w, p), _metric(b, w, p)) for label, w, p in metric_rows(a, b)],
        val_refusal(a, b),
    )


def read_metrics(folder: Folder | None) -> list[dict[str, Any]]:
    """The rows of a train version's metrics.jsonl (none without one)."""
    if folder is None:
        return []
    rows = []
    text = folder.read_text(METRICS_FILE)
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{folder.url_of(METRICS_FILE)}:{lineno}: not valid JSON ({exc.msg})"
                ) from None
    return rows


def plot_loss_curves(comparison: Comparison, path: Path | str) -> Path:
    """Both runs' train loss (lines) and val loss (markers) per step, on one axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for side, color in ((comparison.a, "tab:blue"), (comparison.b, "tab:orange")):
        rows = read_metrics(side.metrics)
        train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
        val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
        if train:
            ax.plot(*zip(*train, strict=True), color=color, linewidth=1, alpha=0.7,
                    label=f"{side.run_id} train")  # fmt: skip
        if val:
            ax.plot(*zip(*val, strict=True), "o-", color=color, markersize=3,
                    label=f"{side.run_id} val")  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(f"{comparison.a.run_id} vs {comparison.b.run_id}")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
