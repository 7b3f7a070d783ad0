"""The report's charts stay readable: axis labels never overlap, whatever the magnitudes."""

from __future__ import annotations

import pytest

from pipeline.report.collect import FunnelRow
from pipeline.report.plots import _compact, funnel_figure


def _funnel(scale: int) -> list[FunnelRow]:
    """Five stages keeping ~95% to ~55% of `scale` documents, ~2,000 tokens each."""
    kept = [0.96, 0.83, 0.58, 0.54, 0.54]
    rows = [
        FunnelRow(stage, scale, int(scale * share), tokens=int(scale * share * 2_000))
        for stage, share in zip(
            ["crawl", "extract", "filter", "dedup", "tokenize"], kept, strict=True
        )
    ]
    rows[-1].tokens_exact = True
    return rows


def _overlapping(labels) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent()) for t in labels if t.get_text()]
    return [
        (a, b)
        for i, (a, box_a) in enumerate(boxes)
        for b, box_b in boxes[i + 1 :]
        if box_a.overlaps(box_b)
    ]


@pytest.mark.parametrize("scale", [7, 1_234, 56_789, 1_700_000, 987_654_321])
def test_funnel_axis_labels_do_not_overlap(scale):
    fig = funnel_figure(_funnel(scale))
    fig.canvas.draw()  # lays out the figure: label boxes are final
    assert len(fig.axes) == 2  # documents and tokens
    for ax in fig.axes:
        assert _overlapping(ax.get_xticklabels()) == [], ax.get_title()
        assert _overlapping(ax.get_yticklabels()) == [], ax.get_title()


def test_compact_axis_numbers():
    assert [_compact(x) for x in (0, 400, 1_200, 2_500_000, 3e9)] == [
        "0",
        "400",
        "1.2k",
        "2.5M",
        "3B",
    ]
