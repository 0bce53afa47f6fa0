"""Run reports as Markdown and as one self-contained HTML file: the metrics with their
intervals, the distribution of each metric over the questions, a comparison chart when a
second run is given, the questions that changed most, and the rows that failed and why.

Charts are inline SVG written here (bars and whiskers, a few dozen lines) rather than
matplotlib or plotly: the report opens offline in any browser, and the default install
stays free of plotting libraries.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime

from alicerce.evaluate.compare import Comparison
from alicerce.evaluate.runs import Run

BINS = 10


def _when(run: Run) -> str:
    return datetime.fromtimestamp(run.at, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _header(run: Run) -> list[tuple[str, str]]:
    rate = run.rows / run.seconds * 60 if run.seconds else 0.0
    return [("run", run.id), ("kind", run.kind), ("app", f"{run.app}"
             + (f"@{run.app_version}" if run.app_version else "")),
            ("dataset", f"{run.dataset}@{run.dataset_version}"),
            ("metrics", ", ".join(run.metrics)), ("judge", run.judge or "-"),
            ("rows", f"{run.rows} ({run.failed} with a metric missing)"),
            ("time", f"{run.seconds:.1f} s ({rate:.1f} questions/min)"),
            ("when", _when(run)), ("MLflow run", run.mlflow_run or "-")]


def markdown(run: Run, comparison: Comparison | None = None) -> str:
    out = [f"# Evaluation {run.id}", ""] + [f"- **{k}**: {v}" for k, v in _header(run)]
    out += ["", "| metric | mean | 95% CI | n |", "|---|---:|---|---:|"]
    out += [f"| {m} | {e.mean:.4f} | {e.low:.4f} - {e.high:.4f} | {e.n} |"
            for m, e in run.summary.items()]
    if comparison is not None:
        out += ["", f"## Against {comparison.a.id}", "",
                "| metric | A | B | B - A (95% CI) | |", "|---|---:|---:|---|---|"]
        out += [f"| {d.metric} | {d.a.mean:.4f} | {d.b.mean:.4f} | {d.delta.mean:+.4f} "
                f"({d.delta.low:+.4f} .. {d.delta.high:+.4f}) | "
                f"{'significant' if d.significant else ''} |" for d in comparison.metrics]
        out += ["", "Questions that changed most:", ""]
        out += [f"- {q.change:+.3f} `{q.row_id}` {q.question}" for q in comparison.questions]
    failed = [r for r in run.results if r.errors]
    if failed:
        out += ["", f"## Rows with a metric missing ({len(failed)})", ""]
        out += [f"- `{r.row_id}` {r.question[:80]}: {'; '.join(r.errors)}" for r in failed[:50]]
    return "\n".join(out) + "\n"


def _histogram(values: Sequence[float], width: int = 220, height: int = 70) -> str:
    counts = [0] * BINS
    for v in values:
        counts[min(BINS - 1, max(0, int(v * BINS)))] += 1
    top = max(counts) or 1
    bar = width / BINS
    bars = "".join(
        f'<rect x="{i * bar + 1:.1f}" y="{height - 14 - c / top * (height - 18):.1f}" '
        f'width="{bar - 2:.1f}" height="{c / top * (height - 18):.1f}" fill="#3b6ea5">'
        f"<title>{i / BINS:.1f}-{(i + 1) / BINS:.1f}: {c}</title></rect>"
        for i, c in enumerate(counts))
    axis = (f'<text x="0" y="{height - 2}" font-size="10">0</text>'
            f'<text x="{width - 8}" y="{height - 2}" font-size="10">1</text>')
    return f'<svg width="{width}" height="{height}" role="img">{bars}{axis}</svg>'


def _bars(comparison: Comparison, width: int = 640) -> str:
    rows = comparison.metrics
    h = 22 * len(rows) + 30
    x0, span = 180, width - 200
    parts = []
    for i, d in enumerate(rows):
        y = 20 + i * 22
        parts.append(f'<text x="0" y="{y + 12}" font-size="11">{html.escape(d.metric)}</text>')
        for j, (est, color) in enumerate(((d.a, "#999"), (d.b, "#3b6ea5"))):
            yy = y + j * 9
            parts.append(f'<rect x="{x0}" y="{yy}" width="{max(0.0, est.mean) * span:.1f}" '
                         f'height="8" fill="{color}"><title>{est.mean:.4f}</title></rect>')
            parts.append(f'<line x1="{x0 + est.low * span:.1f}" x2="{x0 + est.high * span:.1f}" '
                         f'y1="{yy + 4}" y2="{yy + 4}" stroke="#000"/>')
    legend = (f'<text x="{x0}" y="12" font-size="11" fill="#777">A {comparison.a.id}</text>'
              f'<text x="{x0 + 160}" y="12" font-size="11" fill="#3b6ea5">B '
              f"{comparison.b.id}</text>")
    return f'<svg width="{width}" height="{h}" role="img">{legend}{"".join(parts)}</svg>'


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def html_report(run: Run, comparison: Comparison | None = None) -> str:
    e = html.escape
    head = _table(["", ""], [(e(k), e(v)) for k, v in _header(run)])
    metrics = _table(["metric", "mean", "95% CI", "n", "distribution over questions"], [
        (e(m), f"{s.mean:.4f}", f"{s.low:.4f} - {s.high:.4f}", str(s.n),
         _histogram([r.scores[m] for r in run.results if m in r.scores]))
        for m, s in run.summary.items()])
    parts = [f"<h1>Evaluation {e(run.id)}</h1>", head, "<h2>Metrics</h2>", metrics]
    if comparison is not None:
        parts += [f"<h2>Against {e(comparison.a.id)}</h2>", _bars(comparison), _table(
            ["metric", "A", "B", "B - A", "95% CI of B - A", ""],
            [(e(d.metric), f"{d.a.mean:.4f}", f"{d.b.mean:.4f}", f"{d.delta.mean:+.4f}",
              f"{d.delta.low:+.4f} .. {d.delta.high:+.4f}",
              "significant" if d.significant else "") for d in comparison.metrics]),
            "<h3>Questions that changed most</h3>", _table(
            ["change", "question", "answer A", "answer B"],
            [(f"{q.change:+.3f}", e(q.question), e(q.answer_a), e(q.answer_b))
             for q in comparison.questions])]
    parts += ["<h2>Questions</h2>", _table(
        ["id", "question", "answer", "scores", "missing"],
        [(e(r.row_id), e(r.question), e(r.answer),
          "<br>".join(f"{e(k)} {v:.3f}" for k, v in r.scores.items()),
          e("; ".join(r.errors))) for r in run.results])]
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ddd;"
             "padding:4px 8px;vertical-align:top;font-size:13px}th{background:#f3f3f3}")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Evaluation '
            f"{e(run.id)}</title><style>{style}</style></head><body>{''.join(parts)}"
            "</body></html>\n")
