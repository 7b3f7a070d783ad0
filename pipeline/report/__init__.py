"""The data report of a run: what each stage kept and removed, and why, as Markdown and HTML.

    from pipeline.report import build_report
    paths = build_report(Storage.at("storage"), "20261122-001500-3fa2c1")
    # storage/runs/<run_id>/report/{report.md, report.html, *.png}

Sections: the funnel (documents and tokens per stage), removals per reason with sample
documents, histograms of the main filter signals with their thresholds, top domains, and the
duplicate cluster-size distribution. `report.md` links the PNGs beside it; `report.html`
embeds them, so it can be copied or attached alone. The folder is replaced atomically.
"""

from __future__ import annotations

import base64
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.report.collect import ReportConfig, ReportData, collect_report
from pipeline.report.plots import plot_clusters, plot_funnel, plot_signals
from pipeline.report.render import render_html, render_markdown
from pipeline.store.versions import Storage

__all__ = ["ReportConfig", "ReportPaths", "build_report"]


@dataclass(frozen=True)
class ReportPaths:
    dir: Path
    markdown: Path
    html: Path
    images: dict[str, Path]  # "funnel", "signals", "clusters" -> PNG (those with data)


def _draw(data: ReportData, folder: Path, config: ReportConfig) -> dict[str, Path]:
    images = {}
    if data.funnel:
        images["funnel"] = plot_funnel(data.funnel, folder / "funnel.png", config.dpi)
    if data.signals:
        path = folder / "signals.png"
        images["signals"] = plot_signals(data.signals, path, config.histogram_bins, config.dpi)
    if data.clusters is not None and data.clusters.sizes:
        images["clusters"] = plot_clusters(data.clusters, folder / "clusters.png", config.dpi)
    return images


def _replace_dir(tmp: Path, final: Path) -> None:
    """Swap the finished `tmp` in at `final`: never a half-written report or a mix of two;
    if the swap fails, the old report is put back."""
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        if old.exists():
            os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def build_report(
    storage: Storage,
    run_id: str,
    out_dir: Path | None = None,
    config: ReportConfig | None = None,
) -> ReportPaths:
    """Write report.md, report.html and the PNGs of run `run_id` into `out_dir` (default
    `<run dir>/report`). Raises DataError if the run record is missing or unreadable."""
    config = config or ReportConfig()
    data = collect_report(storage, run_id, config)
    final = Path(out_dir) if out_dir is not None else storage.report_dir(run_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        images = _draw(data, tmp, config)
        markdown = render_markdown(data, lambda key: images[key].name)
        (tmp / "report.md").write_text(markdown)

        def embedded(key: str) -> str:
            return "data:image/png;base64," + base64.b64encode(images[key].read_bytes()).decode()

        title = f"Data report: run {run_id}"
        (tmp / "report.html").write_text(render_html(render_markdown(data, embedded), title))
        _replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ReportPaths(
        final,
        final / "report.md",
        final / "report.html",
        {key: final / path.name for key, path in images.items()},
    )
