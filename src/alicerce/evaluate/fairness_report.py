"""What a fairness run shows: per attribute, how often answers changed (judge, metric), the
change above the control's, abstention and refusal differences, each group's rates, and the
pairs that differ most, as Markdown and as a self-contained HTML page."""

from __future__ import annotations

import html as h

from alicerce.evaluate.fairness import largest
from alicerce.evaluate.fairness_probes import CONTROL
from alicerce.evaluate.runs import RowResult, Run
from alicerce.evaluate.text import excerpt

Table = tuple[list[str], list[list[str]]]


def _pct(run: Run, metric: str, signed: bool = False) -> str:
    est = run.summary.get(metric)
    if est is None or not est.n:
        return "-"
    sign = "+" if signed and est.mean > 0 else ""
    return f"{sign}{est.mean:.1%} ({est.low:.0%} to {est.high:.0%}, n={est.n})"


def _num(run: Run, metric: str) -> str:
    est = run.summary.get(metric)
    return "-" if est is None or not est.n else f"{est.mean:.2f} ({est.low:.2f}-{est.high:.2f})"


def attribute_table(run: Run) -> Table:
    mentioned = run.lineage.get("mentioned", {})
    head = ["attribute", "questions mentioning it", "pairs", "answer changed (judge)",
            "above the control", "changed (F1 < 0.5 or other numbers)", "answer distance (1 - F1)",
            "abstention differs", "refusal differs"]
    body = []
    for attr in [*run.lineage.get("measured", []), CONTROL]:
        est = run.summary.get(f"{attr}.distance")
        body.append([attr, "all (control)" if attr == CONTROL else str(mentioned.get(attr, 0)),
                     str(est.n if est else 0), _pct(run, f"{attr}.changed"),
                     "" if attr == CONTROL else _pct(run, f"{attr}.changed_over_control", True),
                     _pct(run, f"{attr}.changed_metric"), _num(run, f"{attr}.distance"),
                     _pct(run, f"{attr}.abstention_diff"), _pct(run, f"{attr}.refusal_diff")])
    return head, body


def group_table(run: Run) -> Table:
    head = ["attribute", "group", "abstained", "refused by a guard"]
    body = []
    for key in sorted(run.summary):
        parts = key.split(".")
        if len(parts) == 3 and parts[2] == "abstained":
            attr, group = parts[0], parts[1]
            body.append([attr, group, _pct(run, key), _pct(run, f"{attr}.{group}.refused")])
    return head, body


def unmeasured(run: Run) -> list[str]:
    measured = set(run.lineage.get("measured", []))
    return [a for a in run.lineage.get("attributes", []) if a not in measured]


def _why(r: RowResult) -> str:
    judged = r.details.get("judge")
    if judged:
        return f"{judged['label']}: {judged['explanation']}"
    flags = [name for name, key in (("abstained", "abstained"), ("refused", "refused"))
             if r.details.get(key) != r.details.get(f"reference_{key}")]
    return ("differs in " + " and ".join(flags)) if flags else \
        f"distance {r.scores.get('distance', 0):.2f}"


def _intro(run: Run) -> str:
    mode = "personas and mentions" if run.lineage.get("personas") else "mentions"
    return (f"App `{run.target}` on {run.dataset}@{run.dataset_version}: "
            f"{run.lineage.get('questions', '?')} questions, {run.rows} counterfactual pairs "
            f"({mode}), judge {run.judge or 'off'}, {run.seconds:.0f} s.")


NOTE = ("Read an attribute's change rate against the control's (the same question with a "
        "change that should not matter): only the part above it says something about the "
        "attribute. Intervals are 95% bootstrap intervals.")


def markdown(run: Run, top: int = 10) -> str:
    out = [f"# Fairness run {run.id}", "", _intro(run), "", NOTE, ""]
    for head, body in (attribute_table(run), group_table(run)):
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in body]
        out.append("")
    if missing := unmeasured(run):
        out += [f"Not measured, no question mentions them: {', '.join(missing)} "
                "(use --personas to ask every question as each group's persona).", ""]
    pairs = largest(run, top)
    if pairs:
        out += ["## The largest differences", ""]
        for r in pairs:
            d = r.details
            out += [f"- **{d['attribute']}**, {d['reference_group']} → {d['group']} "
                    f"({_why(r)})",
                    f"  - {excerpt(d['reference_question'])} → {excerpt(d['reference_answer'])}",
                    f"  - {excerpt(r.question)} → {excerpt(r.answer)}"]
    return "\n".join(out) + "\n"


def html(run: Run, top: int = 10) -> str:
    def table(t: Table) -> str:
        head, body = t
        return ("<table><tr>" + "".join(f"<th>{h.escape(x)}</th>" for x in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{h.escape(x)}</td>" for x in row) + "</tr>"
                          for row in body) + "</table>")

    def pair(r: RowResult) -> str:
        d = r.details
        return (f"<tr><td>{h.escape(d['attribute'])}<br>{h.escape(d['reference_group'])} → "
                f"{h.escape(d['group'])}</td><td><b>{h.escape(d['reference_question'])}</b>"
                f"<br>{h.escape(d['reference_answer'])}</td><td><b>{h.escape(r.question)}</b>"
                f"<br>{h.escape(r.answer)}</td><td>{h.escape(_why(r))}</td></tr>")
    pairs = largest(run, top)
    missing = unmeasured(run)
    return ("<!doctype html><html lang='en'><meta charset='utf-8'><title>Fairness "
            + h.escape(run.id) + "</title><style>body{font:14px sans-serif;max-width:70em;"
            "margin:2em auto}table{border-collapse:collapse;margin:1em 0}td,th{border:1px "
            "solid #ccc;padding:4px 8px;vertical-align:top}</style>"
            f"<h1>Fairness run {h.escape(run.id)}</h1><p>{h.escape(_intro(run))}</p>"
            f"<p>{h.escape(NOTE)}</p>" + table(attribute_table(run)) + table(group_table(run))
            + (f"<p>Not measured, no question mentions them: {h.escape(', '.join(missing))}"
               " (use --personas).</p>" if missing else "")
            + ("<h2>The largest differences</h2><table><tr><th>attribute</th><th>reference"
               "</th><th>variant</th><th>why</th></tr>" + "".join(map(pair, pairs))
               + "</table>" if pairs else "") + "</html>")
