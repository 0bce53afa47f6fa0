"""A drift run as text (the CLI) and as one self-contained HTML page with inline SVG plots:
length histograms, topic shares before and now, and the app's drift history."""

from __future__ import annotations

import html as h
import time
from collections.abc import Sequence

from alicerce.observe.drift import SideReport
from alicerce.observe.drift_runs import DriftRun

READING = {
    "embedding_mmd": "meaning (MMD², permutation test)",
    "centroid_cosine": "centroid cosine distance",
    "chars_ks": "length in characters (KS D)",
    "chars_psi": "length in characters (PSI)",
    "tokens_ks": "length in words (KS D)",
    "tokens_psi": "length in words (PSI)",
    "oov_rate": "words unseen in the baseline",
    "topic_shift": "topic mix moved (total variation)",
}


def text(run: DriftRun) -> str:
    out = [f"drift run {run.id}  app {run.app}  "
           f"{'DRIFT' if run.drifted else 'no drift'}  ({run.seconds:.1f} s)",
           f"  baseline: {run.sources['baseline']}", f"  current:  {run.sources['current']}"]
    for side in run.sides:
        out.append(f"\n{side.side}s: {side.n_baseline} baseline vs {side.n_current} current  "
                   f"{'DRIFTED' if side.drifted else 'stable'}")
        for t in side.tests:
            p = "" if t.p_value is None else f"  p={t.p_value:.4f}"
            extra = f"  (expected {t.detail['expected']:.3f})" if "expected" in t.detail else ""
            out.append(f"  {'!' if t.flagged else ' '} {READING.get(t.name, t.name):40} "
                       f"{t.value:8.4f}{p}{extra}")
        grown = [t for t in side.topics if t.current_share - t.baseline_share >= 0.05]
        for topic in grown[:3]:
            label = "new (far from every baseline topic)" if topic.cluster < 0 else \
                f"topic {topic.cluster}"
            out.append(f"  grew: {label} [{', '.join(topic.terms)}] "
                       f"{topic.baseline_share:.0%} -> {topic.current_share:.0%}"
                       + (f"  e.g. {topic.examples[0][:80]!r}" if topic.examples else ""))
        if side.new_terms:
            out.append("  new terms: " + ", ".join(f"{w} ({n})" for w, n in side.new_terms[:8]))
    return "\n".join(out)


def html(run: DriftRun, history: Sequence[DriftRun] = ()) -> str:
    parts = [f"<h1>Drift: {h.escape(run.app)} "
             f"<span class='{'bad' if run.drifted else 'ok'}'>"
             f"{'drift' if run.drifted else 'no drift'}</span></h1>",
             f"<p>Run {h.escape(run.id)}, {_when(run.at)}, {run.seconds:.1f} s.<br>"
             f"Baseline: {h.escape(run.sources['baseline'])}<br>"
             f"Current: {h.escape(run.sources['current'])}</p>"]
    for side in run.sides:
        parts.append(_side(side))
    if len(history) > 1:
        parts.append("<h2>History</h2>" + _history(history))
    return ("<!doctype html><meta charset='utf-8'><title>Drift " + h.escape(run.app) +
            "</title><style>body{font:14px sans-serif;max-width:62em;margin:2em auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
            ".bad{color:#b00}.ok{color:#070}.b{fill:#888}.c{fill:#d62}</style>"
            + "".join(parts))


def _side(side: SideReport) -> str:
    rows = "".join(
        f"<tr class='{'bad' if t.flagged else ''}'><td>{h.escape(READING.get(t.name, t.name))}"
        f"</td><td>{t.value:.4f}</td><td>{'' if t.p_value is None else f'{t.p_value:.4f}'}"
        f"</td><td>{'flagged' if t.flagged else ''}</td></tr>" for t in side.tests)
    topics = "".join(
        f"<tr><td>{'new' if t.cluster < 0 else t.cluster}</td>"
        f"<td>{h.escape(', '.join(t.terms))}</td>"
        f"<td>{_bar(t.baseline_share, 'b')} {t.baseline_share:.0%}</td>"
        f"<td>{_bar(t.current_share, 'c')} {t.current_share:.0%}</td>"
        f"<td>{'<br>'.join(h.escape(e[:120]) for e in t.examples)}</td></tr>"
        for t in side.topics)
    lengths = "".join(f"<h4>{h.escape(f)}</h4>" + _histogram(v)
                      for f, v in side.lengths.items())
    terms = ", ".join(f"{h.escape(w)} ({n})" for w, n in side.new_terms) or "none"
    return (f"<h2>{h.escape(side.side)}s: {side.n_baseline} baseline, {side.n_current} "
            f"current, <span class='{'bad' if side.drifted else 'ok'}'>"
            f"{'drifted' if side.drifted else 'stable'}</span></h2>"
            f"<table><tr><th>test</th><th>value</th><th>p-value</th><th></th></tr>{rows}"
            f"</table><h3>Topics (grey baseline, orange current)</h3><table><tr><th>topic"
            f"</th><th>terms</th><th>baseline</th><th>current</th><th>current examples</th>"
            f"</tr>{topics}</table><h3>Lengths</h3>{lengths}"
            f"<h3>New frequent terms</h3><p>{terms}</p>")


def _bar(share: float, cls: str, width: int = 120) -> str:
    return (f"<svg width='{width}' height='10'><rect class='{cls}' width='{share * width:.1f}'"
            f" height='10'/></svg>")


def _histogram(v: dict[str, list[float]], width: int = 480, height: int = 90) -> str:
    b, c, edges = v["baseline"], v["current"], v["edges"]
    top = max([*b, *c, 1e-9])
    step = width / max(1, len(b))
    bars = []
    for i, (x, y) in enumerate(zip(b, c, strict=True)):
        for j, (value, cls) in enumerate(((x, "b"), (y, "c"))):
            hh = value / top * (height - 14)
            bars.append(f"<rect class='{cls}' x='{i * step + j * step / 2:.1f}' "
                        f"y='{height - 14 - hh:.1f}' width='{step / 2 - 1:.1f}' "
                        f"height='{hh:.1f}'/>")
    axis = (f"<text x='0' y='{height - 2}' font-size='10'>{edges[0]:.0f}</text>"
            f"<text x='{width - 30}' y='{height - 2}' font-size='10'>{edges[-1]:.0f}</text>")
    return f"<svg width='{width}' height='{height}' role='img'>{''.join(bars)}{axis}</svg>"


def _history(runs: Sequence[DriftRun]) -> str:
    ordered = sorted(runs, key=lambda r: r.at)
    rows = "".join(
        f"<tr><td>{_when(r.at)}</td><td>{h.escape(r.baseline)}</td><td>{h.escape(r.window)}"
        f"</td><td class='{'bad' if r.drifted else 'ok'}'>{'drift' if r.drifted else 'stable'}"
        f"</td>" + "".join(f"<td>{_mmd(r, s)}</td>" for s in ("input", "output")) + "</tr>"
        for r in ordered)
    return ("<table><tr><th>when</th><th>baseline</th><th>window</th><th></th>"
            f"<th>input MMD²</th><th>output MMD²</th></tr>{rows}</table>")


def _mmd(run: DriftRun, side: str) -> str:
    s = run.side(side)
    t = s.test("embedding_mmd") if s else None
    return "" if t is None else f"{t.value:.4f} (p {t.p_value:.3f})"


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(at))
