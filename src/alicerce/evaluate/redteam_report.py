"""A red-team run's numbers and what is shown of them: attack-success and false-refusal
rates with intervals, rail latencies, CI gates over any metric, Markdown and HTML reports.
Shared by the RAG and the agent red teams (evaluate/redteam.py, evaluate/agent_redteam.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from alicerce.errors import InputError
from alicerce.evaluate.runs import RowResult, Run
from alicerce.evaluate.stats import Estimate, bootstrap
from alicerce.evaluate.text import excerpt


def summarise(results: Sequence[RowResult]) -> dict[str, Estimate]:
    """Rates with 95% bootstrap intervals: attack success overall and per suite, false
    refusals overall and per benign source, and the rails' latency."""
    out: dict[str, Estimate] = {}
    attacks = [r for r in results if r.details["kind"] == "attack"]
    benign = [r for r in results if r.details["kind"] == "benign"]
    groups: dict[str, list[RowResult]] = {"": attacks}
    for r in attacks:
        groups.setdefault(r.details["suite"] + ".", []).append(r)
    for prefix, rows in groups.items():
        for key, name in (("success", "attack_success"),
                          ("success_unguarded", "attack_success_unguarded")):
            values = [r.scores[key] for r in rows if key in r.scores and not r.errors]
            if values:
                out[prefix + name] = bootstrap(values)
    by_source: dict[str, list[RowResult]] = {"": benign}
    for r in benign:
        by_source.setdefault("." + r.details["source"], []).append(r)
    for suffix, rows in by_source.items():
        values = [r.scores["refused"] for r in rows if not r.errors]
        if values:
            out["false_refusal" + suffix] = bootstrap(values)
    rails: dict[str, list[float]] = {}
    for r in results:
        for rail, ms in r.details["rails_ms"].items():
            rails.setdefault(rail, []).append(ms)
    for rail, values in rails.items():
        ordered = sorted(values)
        for q, label in ((0.5, "p50"), (0.99, "p99")):
            v = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
            out[f"latency_ms.{rail}.{label}"] = Estimate(v, v, v, len(values))
    return out


def parse_gate(text: str) -> list[tuple[str, str, float]]:
    """'attack_success<=0.05,false_refusal<=0.05' -> [(metric, op, value)]."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"([\w.\-]+)\s*(<=|>=)\s*([0-9.]+)", part)
        if not m:
            raise InputError(f"bad gate {part!r}",
                             hint="write METRIC<=NUMBER or METRIC>=NUMBER, comma-separated, "
                                  "e.g. attack_success<=0.05,false_refusal<=0.05")
        out.append((m.group(1), m.group(2), float(m.group(3))))
    return out


def check_gate(run: Run, limits: Sequence[tuple[str, str, float]]) -> list[tuple[bool, str]]:
    """(passed, why) for each limit; a metric the run lacks fails."""
    out = []
    for metric, op, value in limits:
        est = run.summary.get(metric)
        if est is None:
            out.append((False, f"{metric} is not in this run (it has: "
                               f"{', '.join(sorted(run.summary))})"))
            continue
        ok = est.mean <= value if op == "<=" else est.mean >= value
        out.append((ok, f"{metric} = {est.mean:.4f} (95% CI {est.low:.4f}-{est.high:.4f}), "
                        f"limit {op} {value}"))
    return out


# -- reports ----------------------------------------------------------------------------
def _pct(run: Run, metric: str) -> str:
    est = run.summary.get(metric)
    return "-" if est is None else f"{est.mean:.1%} ({est.low:.0%}-{est.high:.0%}, n={est.n})"


def _tables(run: Run) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    suites_ = sorted({r.details["suite"] for r in run.results
                      if r.details["kind"] == "attack"})
    rows = [[s, _pct(run, f"{s}.attack_success"), _pct(run, f"{s}.attack_success_unguarded")]
            for s in suites_]
    rows.append(["all attacks", _pct(run, "attack_success"),
                 _pct(run, "attack_success_unguarded")])
    sources = sorted({k.split(".", 1)[1] for k in run.summary
                      if k.startswith("false_refusal.")})
    refusals = [[s, _pct(run, f"false_refusal.{s}")] for s in sources]
    refusals.append(["all benign", _pct(run, "false_refusal")])
    rails = sorted({k.split(".")[1] for k in run.summary if k.startswith("latency_ms.")})
    lat = [[r, f"{run.summary[f'latency_ms.{r}.p50'].mean:.1f}",
            f"{run.summary[f'latency_ms.{r}.p99'].mean:.1f}"] for r in rails]
    return rows, refusals, lat


def _hits(run: Run, limit: int = 25) -> list[RowResult]:
    return [r for r in run.results if r.scores.get("success")][:limit]


def _refused(run: Run, limit: int = 25) -> list[RowResult]:
    return [r for r in run.results if r.scores.get("refused")
            and r.details["kind"] == "benign"][:limit]


def markdown(run: Run) -> str:
    rows, refusals, lat = _tables(run)
    out = [f"# Red-team run {run.id}", "",
           f"App `{run.target}`, {run.rows} probes, {run.seconds:.0f} s, suites "
           f"{run.dataset_version}.", "",
           "| suite | attack success with guards | without guards |", "|---|---|---|"]
    out += [f"| {' | '.join(r)} |" for r in rows]
    out += ["", "| benign prompts | false refusals (blocked by a guard) |", "|---|---|"]
    out += [f"| {' | '.join(r)} |" for r in refusals]
    out += ["", "| rail | p50 ms | p99 ms |", "|---|---|---|"]
    out += [f"| {' | '.join(r)} |" for r in lat]
    for title, items in (("Attacks that succeeded with guards on", _hits(run)),
                         ("Benign prompts refused", _refused(run))):
        if items:
            out += ["", f"## {title}", ""]
            out += [f"- `{r.row_id}` ({r.details['suite']}, "
                    f"{r.details['blocked_by'] or 'answered'}): {excerpt(r.question)} → "
                    f"{excerpt(r.answer)}" for r in items]
    return "\n".join(out) + "\n"


def html(run: Run) -> str:
    import html as h

    rows, refusals, lat = _tables(run)

    def table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
        return ("<table><tr>" + "".join(f"<th>{h.escape(x)}</th>" for x in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{h.escape(x)}</td>" for x in r) + "</tr>"
                          for r in body) + "</table>")
    def items(rows_: Sequence[RowResult]) -> str:
        return "".join(
            f"<li><code>{h.escape(r.row_id)}</code> ({h.escape(r.details['suite'])}, "
            f"{h.escape(r.details['blocked_by'] or 'answered')}): "
            f"{h.escape(excerpt(r.question))} → {h.escape(excerpt(r.answer))}</li>"
            for r in rows_)
    hits, refused = items(_hits(run)), items(_refused(run))
    return ("<!doctype html><meta charset='utf-8'><title>Red-team " + h.escape(run.id) +
            "</title><style>body{font:14px sans-serif;max-width:60em;margin:2em auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
            "</style>"
            f"<h1>Red-team run {h.escape(run.id)}</h1><p>App <b>{h.escape(run.target)}</b>, "
            f"{run.rows} probes, {run.seconds:.0f} s.</p>"
            + table(["suite", "attack success with guards", "without guards"], rows)
            + table(["benign prompts", "false refusals (blocked by a guard)"], refusals)
            + table(["rail", "p50 ms", "p99 ms"], lat)
            + (f"<h2>Attacks that succeeded with guards on</h2><ul>{hits}</ul>" if hits
               else "<p>No attack succeeded with guards on.</p>")
            + (f"<h2>Benign prompts refused</h2><ul>{refused}</ul>" if refused else ""))
