"""Comparing runs and gating changes: metric by metric with intervals on the paired
difference (the same questions in both runs), the questions that changed most, and a gate
that fails with a readable reason when a metric drops more than allowed.

Every metric is read as higher-is-better except those in LOWER_IS_BETTER.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from alicerce.errors import InputError
from alicerce.evaluate.runs import Run
from alicerce.evaluate.stats import Estimate, paired_difference

LOWER_IS_BETTER = frozenset({"answer.abstained"})


@dataclass(frozen=True)
class MetricDiff:
    metric: str
    a: Estimate
    b: Estimate
    delta: Estimate  # b - a over the questions both runs scored

    @property
    def significant(self) -> bool:
        return self.delta.n > 1 and (self.delta.low > 0 or self.delta.high < 0)


@dataclass(frozen=True)
class QuestionDiff:
    row_id: str
    question: str
    change: float  # mean change over the metrics both runs have for this row
    a: dict[str, float]
    b: dict[str, float]
    answer_a: str
    answer_b: str
    trace_a: str = ""  # the traces behind each answer: what a comparison row links to
    trace_b: str = ""


@dataclass(frozen=True)
class Comparison:
    a: Run
    b: Run
    metrics: list[MetricDiff]
    questions: list[QuestionDiff]
    only_a: list[str] = field(default_factory=list)  # metrics one run has and the other lacks
    only_b: list[str] = field(default_factory=list)


def compare(a: Run, b: Run, top: int | None = 10, changed_only: bool = True) -> Comparison:
    """b against a, the questions that changed most first (`top` of them; None: all).
    Runs on different dataset versions pair only the rows they share."""
    rows_a = {r.row_id: r for r in a.results}
    rows_b = {r.row_id: r for r in b.results}
    shared = [rid for rid in rows_a if rid in rows_b]
    diffs = []
    for m in sorted(set(a.summary) & set(b.summary)):
        pairs = [(rows_a[i].scores[m], rows_b[i].scores[m]) for i in shared
                 if m in rows_a[i].scores and m in rows_b[i].scores]
        delta = paired_difference([p[0] for p in pairs], [p[1] for p in pairs])
        diffs.append(MetricDiff(m, a.summary[m], b.summary[m], delta))
    questions = []
    for rid in shared:
        ra, rb = rows_a[rid], rows_b[rid]
        common = [m for m in ra.scores if m in rb.scores and m != "answer.abstained"]
        if not common:
            continue
        change = sum(rb.scores[m] - ra.scores[m] for m in common) / len(common)
        questions.append(QuestionDiff(rid, ra.question, change,
                                      {m: ra.scores[m] for m in common},
                                      {m: rb.scores[m] for m in common}, ra.answer, rb.answer,
                                      ra.trace_id, rb.trace_id))
    # changed first; among equal scores, a changed answer text before an unchanged one
    questions.sort(key=lambda q: (-abs(q.change), q.answer_a == q.answer_b))
    kept = [q for q in questions if q.change or not changed_only]
    return Comparison(a, b, diffs, kept if top is None else kept[:top],
                      sorted(set(a.summary) - set(b.summary)),
                      sorted(set(b.summary) - set(a.summary)))


@dataclass(frozen=True)
class Check:
    metric: str
    baseline: float | None
    current: float | None
    allowed: float
    ok: bool
    reason: str


@dataclass(frozen=True)
class GateResult:
    run: Run
    baseline: Run | None
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)


def parse_limits(text: str) -> dict[str, float]:
    """'retrieval.mrr=0.02,answer.rougeL=0.03' -> {metric: allowed}."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise InputError(f"bad limit {part!r}", hint="write METRIC=NUMBER, comma-separated, "
                             "e.g. retrieval.mrr=0.02,answer.rougeL=0.03") from None
    return out


def gate(run: Run, baseline: Run | None, max_drop: Mapping[str, float],
         minimum: Mapping[str, float]) -> GateResult:
    """Each `max_drop` metric may fall at most that much below the baseline's mean; each
    `minimum` metric must reach that value. A metric the run lacks fails its check."""
    if not max_drop and not minimum:
        raise InputError("nothing to gate on", hint="give --max-drop and/or --min")
    checks = []
    for m, allowed in max_drop.items():
        cur = run.summary.get(m)
        base = baseline.summary.get(m) if baseline else None
        if cur is None or base is None:
            lacking = run if cur is None else baseline
            have = ", ".join(sorted(lacking.summary)) if lacking else "-"
            checks.append(Check(m, base.mean if base else None, cur.mean if cur else None,
                                allowed, False, f"{m} is not in "
                                f"{'this run' if cur is None else 'the baseline'} "
                                f"(it has: {have})"))
            continue
        drop = (cur.mean - base.mean) if m in LOWER_IS_BETTER else (base.mean - cur.mean)
        ok = drop <= allowed + 1e-12
        checks.append(Check(m, base.mean, cur.mean, allowed, ok,
                            f"{m} {'rose' if m in LOWER_IS_BETTER else 'fell'} {drop:+.4f} "
                            f"({base.mean:.4f} -> {cur.mean:.4f}; 95% CI of this run "
                            f"{cur.low:.4f}-{cur.high:.4f}); allowed {allowed}"
                            if drop > 0 else
                            f"{m} {base.mean:.4f} -> {cur.mean:.4f}: no drop"))
    for m, floor in minimum.items():
        cur = run.summary.get(m)
        ok = cur is not None and cur.mean >= floor
        checks.append(Check(m, None, cur.mean if cur else None, floor, ok,
                            f"{m} is {cur.mean:.4f}, minimum {floor}" if cur else
                            f"{m} is not in this run"))
    return GateResult(run, baseline, checks)
