"""The data report of a run: what each stage kept and removed, and why, as Markdown and HTML.

    from pipeline.report import build_report
    paths = build_report(Storage.at("storage"), "20261122-001500-3fa2c1")
    # storage/runs/<run_id>/report/{report.md, report.html, *.png}

Sections: the funnel (documents and tokens per stage), removals per reason with sample
documents, histograms of the main filter signals with their thresholds, top domains, and the
duplicate cluster-size distribution. `report.md` links the PNGs beside it; `report.html`
embeds them, so it can be copied or attached alone. The report is drawn in a private temp
folder, then each file is published atomically into the run folder (local or remote, through
its `Folder`), the pages last; images an older report had and this one lacks are removed.
"""

from __future__ import annotations

import base64
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.report.collect import ReportConfig, ReportData, collect_report
from pipeline.report.plots import plot_clusters, plot_funnel, plot_signals
from pipeline.report.render import render_html, render_markdown
from pipeline.store.fs import Folder, as_folder
from pipeline.store.versions import Storage

__all__ = ["ReportConfig", "ReportPaths", "build_report"]
PAGES = ("report.md", "report.html")  # written after the images they show
IMAGES = ("funnel.png", "signals.png", "clusters.png")


@dataclass(frozen=True)
class ReportPaths:
    """Where the report went: its folder, and each file as a local path or URL."""

    dir: Folder
    markdown: str
    html: str
    images: dict[str, str]  # "funnel", "signals", "clusters" -> PNG (those with data)


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


def build_report(
    storage: Storage,
    run_id: str,
    out_dir: str | Path | Folder | None = None,
    config: ReportConfig | None = None,
) -> ReportPaths:
    """Write report.md, report.html and the PNGs of run `run_id` into `out_dir` (default
    `<run folder>/report`, local or remote). Raises DataError if the run record is missing or
    unreadable."""
    config = config or ReportConfig()
    data = collect_report(storage, run_id, config)
    final = as_folder(out_dir) if out_dir is not None else storage.report_folder(run_id)
    with tempfile.TemporaryDirectory(prefix="llmforge-report-") as scratch:
        work = Path(scratch)
        images = _draw(data, work, config)
        markdown = render_markdown(data, lambda key: images[key].name)
        (work / "report.md").write_text(markdown)

        def embedded(key: str) -> str:
            return "data:image/png;base64," + base64.b64encode(images[key].read_bytes()).decode()

        title = f"Data report: run {run_id}"
        (work / "report.html").write_text(render_html(render_markdown(data, embedded), title))
        final.put_tree(work, last=PAGES)
        written = {path.name for path in work.iterdir()}
    for stale in set(IMAGES) - written:
        final.remove(stale)  # an image an older report had and this one has not
    return ReportPaths(
        final,
        final.url_of("report.md"),
        final.url_of("report.html"),
        {key: final.url_of(path.name) for key, path in images.items()},
    )
