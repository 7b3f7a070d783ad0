"""PNG charts of a data report: the funnel, filter-signal histograms, duplicate cluster sizes.

Draws on `matplotlib.figure.Figure` with the Agg canvas directly, never `pyplot`, so a report
built inside a notebook or a server neither needs a display nor changes the caller's backend.
PNGs carry no timestamp or version metadata: the same data gives the same bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from pipeline.report.collect import ClusterInfo, FunnelRow, SignalData

KEPT, REMOVED_HERE, REMOVED_ELSEWHERE = "#4c78a8", "#e45756", "#bab0ac"
THRESHOLD = "#222222"


def _compact(x: float, _pos: object = None) -> str:
    """Axis labels short enough to sit side by side in a 4-inch panel ("2.5M", not
    "2,500,000"); the bars' own labels carry the exact counts."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size:
            return f"{x / size:g}{unit}"
    return f"{x:g}"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path, dpi: int) -> Path:
    fig.savefig(path, format="png", dpi=dpi, metadata={"Software": None})
    return path


def _bars(ax, labels: list[str], counts: list[float], color: str, first: float) -> None:
    y = np.arange(len(labels))
    ax.barh(y, counts, color=color)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()  # pipeline order top to bottom
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    ax.xaxis.set_major_formatter(FuncFormatter(_compact))
    ax.set_xlim(0, max(counts) * 1.3 or 1)
    for i, count in enumerate(counts):
        share = f" ({count / first:.0%})" if first else ""
        ax.text(count, i, f" {count:,.0f}{share}", va="center", fontsize=8)


def funnel_figure(rows: list[FunnelRow]) -> Figure:
    """Documents kept after each stage (from the crawl's URLs, if crawled), and tokens."""
    labels, docs = [], []
    if rows and rows[0].stage == "crawl":
        labels.append("crawl: URLs tried")
        docs.append(rows[0].docs_in)
    for row in rows:
        labels.append(f"{row.stage}: kept")
        docs.append(row.docs_out)
    with_tokens = [r for r in rows if r.tokens is not None]
    fig = _figure(9, 0.45 * len(labels) + 1.2)
    axes = fig.subplots(1, 2 if with_tokens else 1, squeeze=False)[0]
    _bars(axes[0], labels, docs, KEPT, docs[0])
    axes[0].set_title("documents")
    if with_tokens:
        names = [f"{r.stage}{'' if r.tokens_exact else ' (est.)'}" for r in with_tokens]
        tokens = [float(r.tokens or 0) for r in with_tokens]
        _bars(axes[1], names, tokens, "#72b7b2", tokens[0])
        axes[1].set_title("tokens (GPT-2)")
    return fig


def plot_funnel(rows: list[FunnelRow], path: Path, dpi: int) -> Path:
    """`funnel_figure` as a PNG at `path`."""
    return _save(funnel_figure(rows), path, dpi)


def _bin_edges(
    values: np.ndarray, limits: list[float], log: bool, bins: int
) -> tuple[np.ndarray, list[float]]:
    """Bins over the data, widened to take in thresholds near it; thresholds far off (Gopher's
    100,000-word cap beside 1,000-word pages) are returned apart, to be labelled at the edge
    rather than squash the histogram."""

    def scale(x):
        return np.log10(np.maximum(x, 1)) if log else np.asarray(x, float)

    low, high = float(scale(values).min()), float(scale(values).max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    span = high - low
    far = []
    for limit in limits:
        at = float(scale(limit))
        if low - span / 2 <= at <= high + span / 2:
            low, high = min(low, at), max(high, at)
        else:
            far.append(limit)
    pad = (high - low) * 0.03
    edges = np.linspace(low - pad, high + pad, bins + 1)
    return (10**edges if log else edges), far


def _signal_panel(ax, signal: SignalData, bins: int) -> None:
    """One signal over all measured documents, split by what became of them."""
    measured = ~np.isnan(signal.values)
    values, outcome = signal.values[measured], signal.outcome[measured]
    edges, far = _bin_edges(values, [v for _, v in signal.thresholds], signal.log, bins)
    clipped = np.clip(values, edges[0], edges[-1])
    groups = [clipped[outcome == k] for k in (0, 1, 2)]
    ax.hist(
        groups,
        bins=edges,
        stacked=True,
        histtype="stepfilled",
        color=[KEPT, REMOVED_HERE, REMOVED_ELSEWHERE],
    )
    if signal.log:
        ax.set_xscale("log")
    row = {True: 0, False: 0}  # far labels stacked per side
    for name, value in signal.thresholds:
        label = f"{name}={value:g}"
        if value in far:
            right = value > edges[-1]
            y = 0.97 - 0.09 * row[right]
            row[right] += 1
            ax.annotate(
                f"{label} →" if right else f"← {label}",
                (1.0 if right else 0.0, y),
                xycoords="axes fraction",
                ha="right" if right else "left",
                va="top",
                fontsize=7,
            )
            continue
        ax.axvline(value, color=THRESHOLD, linestyle="--", linewidth=1.1)
        ax.annotate(
            label,
            (value, 0.97),
            xycoords=("data", "axes fraction"),
            rotation=90,
            ha="right",
            va="top",
            fontsize=7,
        )
    ax.set_title(signal.column, fontsize=9)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)


def plot_signals(signals: list[SignalData], path: Path, bins: int, dpi: int) -> Path:
    """All signal histograms in one grid, one legend: a single image to scan."""
    cols = min(3, len(signals))
    rows = -(-len(signals) // cols)
    fig = _figure(4.0 * cols, 2.5 * rows + 0.4)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, signal in zip(axes, signals, strict=False):
        _signal_panel(ax, signal, bins)
    for ax in axes[len(signals) :]:
        ax.set_axis_off()
    handles = [Patch(color=c) for c in (KEPT, REMOVED_HERE, REMOVED_ELSEWHERE)]
    labels = ["kept", "removed by this signal's rule", "removed by another rule"]
    fig.legend(handles, labels, loc="outside upper center", ncols=3, frameon=False, fontsize=8)
    fig.supylabel("documents", fontsize=8)
    return _save(fig, path, dpi)


def plot_clusters(clusters: ClusterInfo, path: Path, dpi: int) -> Path:
    """How many duplicate clusters of each size (survivor included): a bar per size while
    sizes are small, log-log bins once they run into the dozens (web duplicates are
    heavy-tailed)."""
    sizes = np.array(list(clusters.sizes), float)
    counts = np.array(list(clusters.sizes.values()), float)
    fig = _figure(5.5, 2.9)
    ax = fig.subplots()
    if sizes.max() <= 30:
        bars = ax.bar(sizes, counts, width=0.8, color=KEPT)
        ax.bar_label(bars, [f"{c:,.0f}" for c in counts], fontsize=7)
        ax.set_xlim(1.4, max(sizes.max(), 8) + 0.6)
        ax.margins(y=0.15)  # room for the labels
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        edges = np.unique(np.geomspace(2, sizes.max() + 1, 25).astype(int))
        ax.hist(sizes, bins=edges, weights=counts, color=KEPT)
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("cluster size (documents, survivor included)", fontsize=8)
    ax.set_ylabel("clusters", fontsize=8)
    ax.set_title("duplicate clusters by size", fontsize=10)
    ax.tick_params(labelsize=8)
    return _save(fig, path, dpi)
