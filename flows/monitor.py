"""What a person watching the Prefect UI sees while a stage runs: progress and summaries.

Progress artifacts are updated at most every `MIN_INTERVAL_S` seconds (the server does not need
an update per page or per step), and always at the end. Updates run synchronously even when
called from inside the crawler's event loop (`_sync=True`).
"""

from __future__ import annotations

import base64
import contextvars
import threading
import time
from pathlib import Path
from typing import Any

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)

from pipeline.store.compare import harness_metrics, value_at

MIN_INTERVAL_S = 2.0


class Progress:
    """A progress artifact (0-100) for one stage of one flow run."""

    def __init__(self, key: str, description: str):
        self._id = create_progress_artifact(progress=0.0, key=key, description=description)
        self._last = 0.0
        self._lock = threading.Lock()
        # Updates may come from another thread (the crawler's event loop): carry this flow
        # run's Prefect context (API URL, client settings) with them.
        self._context = contextvars.copy_context()

    def update(self, done: float, total: float, force: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < MIN_INTERVAL_S:
                return
            self._last = now
        percent = 100.0 * min(done / total, 1.0) if total > 0 else 100.0
        self._context.copy().run(
            update_progress_artifact, artifact_id=self._id, progress=percent, _sync=True
        )


def loss_markdown(metrics_path: Path, curve_png: Path, rows: int = 12) -> str:
    """The training curve as a Markdown artifact: the PNG inline plus a table of losses."""
    import json

    lines = [json.loads(x) for x in metrics_path.read_text().splitlines() if x.strip()]
    train = [r for r in lines if "loss" in r]
    val = {r["step"]: r["val_loss"] for r in lines if "val_loss" in r}
    bpb = {r["step"]: r.get("val_bpb") for r in lines if "val_loss" in r}
    picked = train[:: max(1, len(train) // rows)] + train[-1:] if train else []
    by_step = {r["step"]: r for r in train}
    table = ["| step | train loss | val bpb | val loss | tokens/s |", "|---:|---:|---:|---:|---:|"]
    # Every step that was validated gets its row, beside the sampled train steps: val passes
    # run at multiples of eval_interval, train rows are sampled anywhere.
    for step in sorted({r["step"] for r in picked} | set(val)):
        row = by_step.get(step, {})
        cells = (row.get("loss"), bpb.get(step), val.get(step))
        speed = row.get("tokens_per_s")
        table.append(
            f"| {step} | "
            + " | ".join("" if c is None else f"{c:.4f}" for c in cells)
            + f" | {'' if speed is None else f'{speed:.0f}'} |"
        )
    plans = [r["plan"] for r in lines if "plan" in r]
    parts = ["# Training loss", ""]
    if plans:
        parts += [f"Plan: {plans[-1]['reason']}", ""]
    if curve_png.exists():
        encoded = base64.b64encode(curve_png.read_bytes()).decode()
        parts += [f"![loss curve](data:image/png;base64,{encoded})", ""]
    parts += table + ["", f"Metrics: `{metrics_path}`"]
    return "\n".join(parts)


def evaluation_rows(evaluation: dict[str, Any]) -> list[tuple[str, float]]:
    """An eval.json's numbers as (metric, value): val metrics, our HellaSwag scorer's, then
    lm-evaluation-harness's (the run summary's table and the evaluation artifact)."""
    rows = [
        (key.replace("_", " "), evaluation[key])
        for key in ("bits_per_byte", "val_loss", "perplexity")
        if isinstance(evaluation.get(key), int | float)
    ]
    rows += [
        (f"hellaswag {name}", value)
        for name, value in (evaluation.get("hellaswag") or {}).items()
        if isinstance(value, int | float)
    ]
    harness = harness_metrics(evaluation)
    return rows + [(label, value_at(evaluation, path)) for label, path in harness]


def evaluation_markdown(evaluation: dict[str, Any], version_id: str) -> str:
    """The evaluation artifact: every number, our HellaSwag scorer beside the harness's."""
    lines = [f"# Evaluation {version_id}", "", "| metric | value |", "|---|---:|"]
    lines += [f"| {metric} | {value:.4f} |" for metric, value in evaluation_rows(evaluation)]
    if (evaluation.get("lm_eval") or {}).get("version"):
        lines += ["", f"lm-evaluation-harness {evaluation['lm_eval']['version']}"]
    return "\n".join(lines)


def publish_markdown(key: str, markdown: str, description: str) -> Any:
    return create_markdown_artifact(key=key, markdown=markdown, description=description)
