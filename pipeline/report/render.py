"""Write a data report as Markdown, and as HTML rendered from that same Markdown.

One text, two formats: the HTML is markdown-it-py's CommonMark rendering (tables on, raw HTML
off) of the Markdown with each image link pointing at a base64 `data:` URI instead of the PNG
file, so `report.html` is a single self-contained file and both formats always agree.
Document text is untrusted web content: it is HTML-escaped and Markdown-escaped before it
goes anywhere near either format.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import numpy as np
from markdown_it import MarkdownIt

from pipeline.extract.reasons import REASONS
from pipeline.report.collect import ReasonRow, ReportData, Sample
from pipeline.tokenize.tokenizer import describe_compression

_MD_INLINE = re.compile(r"([\\`*_\[\]|~])")  # what could start markup inside a line


def escape(text: str) -> str:
    """Literal text for a Markdown line or table cell: one line, markup characters
    backslash-escaped, `& < >` as HTML entities (so no tag ever reaches the HTML)."""
    return html.escape(_MD_INLINE.sub(r"\\\1", " ".join(text.split())), quote=False)


def _n(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _run_section(data: ReportData) -> list[str]:
    run = data.run
    rows = [
        ["status", escape(str(run.get("status")))],
        ["started", str(run.get("started_at") or "–")],
        ["finished", str(run.get("finished_at") or "–")],
        ["git commit", f"`{run.get('git_commit')}`"],
        ["data stages", ", ".join(data.stages) or "none"],
    ]
    if run.get("error"):
        rows.append(["error", escape(str(run["error"]))])
    lines = _table(["run", f"`{run.get('run_id')}`"], rows)
    if data.notes:
        lines += [f"- {escape(note)}" for note in data.notes] + [""]
    return lines


def _funnel_section(data: ReportData, image: Callable[[str], str]) -> list[str]:
    lines = ["## 1. Funnel", ""]
    if not data.funnel:
        return [*lines, "No data stage in this run.", ""]
    rows = []
    for row in data.funnel:
        info = data.stages[row.stage]
        kept = f"{row.docs_out / row.docs_in:.1%}" if row.docs_in else "–"
        tokens = _n(row.tokens)
        if row.tokens_exact:
            extra = info.counts.get("extra", {})
            tokens += f" (train {_n(extra.get('tokens_train'))}, val {_n(extra.get('tokens_val'))})"
            if (line := describe_compression(extra)) is not None:
                tokens += f"; {escape(line)} on val"
        elif row.tokens is not None:
            tokens = "≈ " + tokens
        reused = " (reused)" if info.reused else ""
        rows.append(
            [
                row.stage,
                f"`{info.version_id}`{reused}",
                _n(row.docs_in),
                _n(row.docs_out),
                _n(row.docs_in - row.docs_out),
                kept,
                _bytes(row.text_bytes),
                tokens,
            ]
        )
    header = ["stage", "version", "docs in", "docs out", "removed", "kept", "text", "tokens"]
    lines += _table(header, rows)
    lines += [
        "Crawl counts URLs tried and HTML pages stored; extract counts pages and documents. "
        "Tokens before tokenize (≈) are estimated from the kept text at the tokens-per-byte "
        "rate tokenize measured on this run (end-of-text tokens included).",
        "",
        f"![funnel]({image('funnel')})",
        "",
    ]
    return lines


def _sample_lines(sample: Sample) -> list[str]:
    line = f"- {escape(sample.url)}"
    if sample.text:
        line += f" — “{escape(sample.text)}”"
    if not sample.detail:
        return [line]
    return [line + "\\", f"  *{escape(sample.detail)}*"]  # "\" at the end: a line break


def _reasons_section(data: ReportData) -> list[str]:
    lines = ["## 2. Removals", ""]
    if not data.reasons:
        return [*lines, "Nothing was removed.", ""]
    by_stage: dict[str, list[ReasonRow]] = {}
    for row in data.reasons:
        by_stage.setdefault(row.stage, []).append(row)
    for stage, rows in by_stage.items():
        total = sum(r.docs for r in rows)
        docs_in = data.stages[stage].counts.get("docs_in", 0)
        lines += [f"### {stage}: {total:,} of {docs_in:,} removed", ""]
        lines += _table(
            ["reason", "docs", "of stage input"],
            [[f"`{r.reason}`", _n(r.docs), f"{r.share:.1%}"] for r in rows],
        )
        for row in rows:
            meaning = f": {escape(REASONS[row.reason])}" if row.reason in REASONS else ""
            lines += [f"#### `{row.reason}` ({row.docs:,}){meaning}", ""]
            for sample in row.samples:
                lines += _sample_lines(sample)
            if row.samples and row.docs > len(row.samples):
                lines += ["", f"*… and {row.docs - len(row.samples):,} more*"]
            if not row.samples:
                lines.append("No sample: the removed documents are not stored.")
            lines.append("")
    return lines + _kept_lines(data)


def _kept_lines(data: ReportData) -> list[str]:
    """What the removals left, beside them: a sample of the documents the run kept."""
    if not data.kept:
        return []
    kept = data.stages[data.kept_stage].counts.get("docs_out", len(data.kept))
    lines = [f"### Kept: {len(data.kept)} of the {kept:,} documents {data.kept_stage} kept", ""]
    for sample in data.kept:
        lines += _sample_lines(sample)
    return [*lines, ""]


def _signals_section(data: ReportData, image: Callable[[str], str]) -> list[str]:
    lines = ["## 3. Filter signals", ""]
    if not data.signals:
        return [*lines, "No filter attributes in this run.", ""]
    lines += [
        "Every document the filter stage saw, by signal value: kept, removed by this signal's "
        "rule, or removed by another rule. Dashed lines are the thresholds the filter version "
        "ran with. *Removed by it*: documents this signal's rule removed (the first failing "
        "filter wins); *fail it*: documents failing that rule whatever else removed them.",
        "",
    ]
    rows = []
    for signal in data.signals:
        measured = signal.values[~np.isnan(signal.values)]
        p5, p50, p95 = (f"{v:.3g}" for v in np.percentile(measured, [5, 50, 95]))
        limits = ", ".join(f"{name} = {value:g}" for name, value in signal.thresholds) or "–"
        removed = int((signal.outcome == 1).sum())
        row = [f"`{signal.column}`", _n(len(measured)), p5, p50, p95, limits]
        rows.append([*row, _n(removed), _n(signal.fails)])
    header = ["signal", "measured", "p5", "median", "p95", "thresholds", "removed by it", "fail it"]
    lines += _table(header, rows)
    lines += [f"![filter signals]({image('signals')})", ""]
    return lines


def _domains_section(data: ReportData) -> list[str]:
    lines = ["## 4. Top domains", ""]
    if not data.domains_kept and not data.domains_removed:
        return [*lines, "No document stage in this run.", ""]
    header = ["domain", "kept", "removed", "most common removal"]

    def cells(rows):
        return [
            [
                escape(r.domain),
                _n(r.kept),
                _n(r.removed),
                f"`{r.top_reason}`" if r.top_reason else "",
            ]
            for r in rows
        ]

    lines += ["By kept documents (after the last document stage):", ""]
    lines += _table(header, cells(data.domains_kept))
    lines += ["By removed documents (all document stages):", ""]
    return lines + _table(header, cells(data.domains_removed))


def _size_range(size: int) -> str:
    """Sizes 2-9 as they are, larger ones by decade, so a heavy tail stays a short table."""
    if size < 10:
        return str(size)
    low = 10 ** (len(str(size)) - 1)
    return f"{low:,}–{10 * low - 1:,}"


def _clusters_section(data: ReportData, image: Callable[[str], str]) -> list[str]:
    lines = ["## 5. Duplicate clusters", ""]
    clusters = data.clusters
    if clusters is None:
        gone = "dedup" in data.stages  # in the run, but its version folder was deleted
        return [*lines, "The dedup version is gone." if gone else "No dedup stage in this run.", ""]
    if not clusters.sizes:
        return [*lines, "No duplicates found.", ""]
    total = sum(clusters.sizes.values())
    extra = data.stages["dedup"].counts.get("extra", {})
    lines += [
        f"{total:,} clusters of 2+ documents; largest {max(clusters.sizes)} "
        f"(dedup manifest: {_n(extra.get('clusters'))} clusters, "
        f"largest {_n(extra.get('largest_cluster'))}). One document of each cluster is kept.",
        "",
    ]
    buckets: dict[str, list[int]] = {}  # size range -> [clusters, removed exact, removed near]
    for size, count in clusters.sizes.items():
        totals = buckets.setdefault(_size_range(size), [0, 0, 0])
        for i, value in enumerate((count, *clusters.exact_near[size])):
            totals[i] += value
    rows = [[label, *map(_n, totals)] for label, totals in buckets.items()]
    lines += _table(["cluster size", "clusters", "removed exact", "removed near"], rows)
    lines += [f"![duplicate clusters]({image('clusters')})", "", "Largest clusters:", ""]
    for size, survivor, members in clusters.largest:
        lines.append(f"- {size} documents, kept {escape(survivor)}")
        lines += [f"  - {escape(url)}" for url in members[:5]]
        if len(members) > 5:
            lines.append(f"  - … {len(members) - 5:,} more")
    return [*lines, ""]


def _contamination_section(data: ReportData) -> list[str]:
    """Evaluation items sharing a word 13-gram with a training document (eval.json)."""
    report = data.contamination
    if not report:
        return []
    n = report.get("ngram", 13)
    lines = [
        "## 6. Contamination",
        "",
        f"Evaluation items with any word {n}-gram found in a training document "
        f"({_n(report.get('train_documents'))} training documents checked; normalized as "
        "lm-evaluation-harness's decontamination). Items shorter than "
        f"{n} words cannot be checked.",
        "",
    ]
    rows = []
    for name, value in report.items():
        if isinstance(value, dict):
            fraction = value.get("fraction")
            share = "–" if fraction is None else f"{fraction:.2%}"
            cells = [_n(value.get(k)) for k in ("items", "too_short", "contaminated")]
            rows.append([escape(name), *cells, share])
    lines += _table(["eval set", "items", "too short", "contaminated", "share"], rows)
    return lines


def render_markdown(data: ReportData, image: Callable[[str], str]) -> str:
    """The report; `image(key)` gives the link target of a chart ("funnel", "signals" or
    "clusters")."""
    lines = [f"# Data report: run {escape(str(data.run.get('run_id')))}", ""]
    lines += _run_section(data)
    lines += _funnel_section(data, image)
    lines += _reasons_section(data)
    lines += _signals_section(data, image)
    lines += _domains_section(data)
    lines += _clusters_section(data, image)
    lines += _contamination_section(data)
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body { font: 14px/1.5 system-ui, sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td:not(:first-child) { font-variant-numeric: tabular-nums; }
h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
h4 { margin: 1em 0 .2em; }
li { margin: .2em 0; }
img { max-width: 100%; }
code { background: #f3f3f3; padding: 0 3px; }
"""


def render_html(markdown: str, title: str) -> str:
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}</body>\n</html>\n"
    )
