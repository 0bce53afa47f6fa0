"""Governance of what is served: feedback and review exports, continuous evaluation,
drift, answer explanations."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from alicerce.core.answering import Answering
from alicerce.datasets import Row
from alicerce.durations import duration_s
from alicerce.errors import InputError
from alicerce.evaluate.dataset_registry import DatasetVersion, check_name
from alicerce.evaluate.online import OnlineEvaluation
from alicerce.evaluate.runs import Run
from alicerce.explain.counterfactual import (
    Change,
    Counterfactual,
    Counterfactuals,
    parse_change,
)
from alicerce.explain.explanation import Explanation
from alicerce.explain.traced import DEFAULT_BUDGET, Explainer
from alicerce.observe.drift_runs import (
    DriftRun,
    baseline_sample,
    compare_samples,
    new_id,
)
from alicerce.observe.trace_records import FeedbackFilter, Trace
from alicerce.refs import split_ref

if TYPE_CHECKING:
    from alicerce.platform import Alicerce


@dataclass(frozen=True)
class ReviewDecision:
    """What a reviewer decided about one answer: `accept` it (the user's corrected answer
    if they gave one, else the answer as given, becomes the reference), `correct` it (with
    `reference`), or `discard` it."""

    trace_id: str
    action: Literal["accept", "correct", "discard"]
    reference: str = ""


class Governance(Answering):
    """Exports, reviews, continuous evaluation, drift and explanations of served apps."""

    _explainer: Explainer | None = None

    @property
    def explanations(self) -> Explainer:
        """Answer explanations, kept per trace (docs/responsible-ai.md)."""
        if self._explainer is None:
            self._explainer = Explainer(cast("Alicerce", self))
        return self._explainer

    def explain(self, trace_id: str, *, budget: int = DEFAULT_BUDGET, seed: int = 0,
                refresh: bool = False,
                progress: Callable[[int, int], None] | None = None) -> Explanation:
        """Which sources and sentences a traced answer rests on, by ablation under the
        model that answered, within `budget` model calls."""
        return self.explanations.explain(trace_id, budget=budget, seed=seed, refresh=refresh,
                                         progress=progress)

    _counterfactuals: Counterfactuals | None = None

    @property
    def counterfactuals(self) -> Counterfactuals:
        if self._counterfactuals is None:
            self._counterfactuals = Counterfactuals(cast("Alicerce", self))
        return self._counterfactuals

    def counterfactual(self, trace_id: str, change: str | Change,
                       caller: str = "local") -> Counterfactual:
        """The traced request asked again with one change (`troque 'X' por 'Y'`, `sem a
        fonte 2`, `modelo NAME`...), both answers and their differences, linked."""
        parsed = parse_change(change) if isinstance(change, str) else change
        return self.counterfactuals.run(trace_id, parsed, caller)

    def close(self) -> None:
        if self._explainer is not None:
            self._explainer.close()
        if self._counterfactuals is not None:
            self._counterfactuals.close()
        super().close()

    def export_feedback(self, to: str | Path, *, app: str | None = None,
                        rating: FeedbackFilter = "any", min_stars: int | None = None,
                        max_stars: int | None = None, actor: str = "local") -> int:
        """Write rated answers as JSONL evaluation rows; the file is replaced only once
        every row is written, so a failed export leaves the old file whole."""
        rows = list(self.traces.export(app=app, rating=rating, min_stars=min_stars,
                                       max_stars=max_stars))
        _write_rows(Path(to), rows)
        self.keys.audit(actor, "feedback.export", str(to),
                        {"rows": len(rows), "app": app, "rating": rating})
        return len(rows)

    def monitor(self, app: str, *, sample: float = 0.05, window: str = "24h",
                judge: bool = False, judge_model: str | None = None,
                limit: int = 1000) -> list[Run]:
        """Score a sample of the app's live traces (groundedness; with a judge the RAG
        triad) joined with their feedback, off the request path; one stored run of kind
        "online" per app version (docs/monitoring.md)."""
        j = self.evals.judge(judge_model) if judge or judge_model else None
        return OnlineEvaluation(cast("Alicerce", self), j).run(app, sample=sample,
                                                               window=window, limit=limit)

    def review_queue(self, app: str | None = None, limit: int = 100) -> list[tuple[Trace, str]]:
        """Traces waiting for a person: rated down, or scored low by `monitor`."""
        return [(self.traces.get(tid), why)
                for tid, why in self.evals.runs.review_queue(app, limit)]

    def export_review(self, to: str | Path, app: str | None = None,
                      actor: str = "local") -> int:
        """Write the review queue as JSONL evaluation rows (question, the answer given,
        the user's reference answer if any) and take them off the queue."""
        queue = self.review_queue(app, limit=10_000)
        rows: list[dict[str, Any]] = []
        for t, why in queue:
            refs = [f.reference for f in self.traces.feedback_for(t.id) if f.reference]
            rows.append({"question": t.question, "answer": t.answer,
                         "reference_answer": refs[-1] if refs else None, "sources": [],
                         "origin": {"trace_id": t.id, "app": t.app,
                                    "app_version": t.app_version, "review": why}})
        _write_rows(Path(to), rows)
        self.evals.runs.mark_reviewed([t.id for t, _ in queue])
        self.keys.audit(actor, "review.export", str(to), {"rows": len(rows), "app": app})
        return len(rows)

    def review(self, decisions: Sequence[ReviewDecision], dataset: str = "golden",
               actor: str = "local") -> DatasetVersion | None:
        """Apply reviewers' decisions: accepted and corrected answers become rows of a new
        version of the stored `dataset`; every decided trace leaves the queue. The new
        version, or None when everything was discarded."""
        check_name(dataset)
        rows = []
        for d in decisions:
            if d.action == "correct" and not d.reference.strip():
                raise InputError(f"correcting {d.trace_id} needs the right answer",
                                 hint="send `reference` with the corrected answer")
            t = self.traces.get(d.trace_id)  # NotFoundError before anything is written
            if d.action == "discard":
                continue
            refs = [f.reference for f in self.traces.feedback_for(t.id) if f.reference]
            reference = d.reference.strip() if d.action == "correct" else (
                refs[-1] if refs else t.answer)
            rows.append(Row(f"trace-{t.id}", t.question, reference=reference,
                            tags=("review",),
                            origin={"trace_id": t.id, "app": t.app,
                                    "app_version": t.app_version, "review": d.action}))
        version = self.datasets.extend(dataset, rows, actor=actor,
                                       note=f"{len(rows)} reviewed answers")[0] if rows else None
        self.evals.runs.mark_reviewed([d.trace_id for d in decisions])
        self.keys.audit(actor, "review.decide", dataset,
                        {"accepted": len(rows), "decided": len(decisions),
                         "version": version.version if version else None})
        return version

    def drift(self, app: str, baseline: str, window: str = "24h", *,
              sides: Sequence[str] = ("input", "output"), sample: int = 500,
              alpha: float = 0.01, seed: int = 0, limit: int = 100_000) -> DriftRun:
        """Skew (`baseline` dataset:PATH, the eval set) or drift (window:7d, the traces of
        the week before) of an app's production traffic in the last `window`, on the
        questions and the answers; the run is stored with the app's drift history."""
        name = split_ref(app)[0]
        window_s = duration_s(window, "--window")
        if not 10 <= sample <= 5000:
            raise InputError(f"sample must be 10..5000 texts per side, got {sample}",
                             hint="e.g. --sample 500")
        if not 0 < alpha < 1:
            raise InputError(f"alpha must be between 0 and 1, got {alpha}", hint="e.g. 0.01")
        unknown = [s for s in sides if s not in ("input", "output")]
        if unknown or not sides:
            raise InputError(f"unknown side(s) {', '.join(unknown) or '(none)'}",
                             hint="use input, output or both")
        coll = self._collection(self.app_collections(app)[0])
        self.traces.flush()
        started, now = time.perf_counter(), time.time()
        runs = self.drift_runs
        current = runs.traces(name, now - window_s, now, limit)
        base = baseline_sample(runs, name, baseline, window_s, now, limit)
        reports = compare_samples(runs, self.embedder_for(coll), base, current,
                                  sample=sample, alpha=alpha, seed=seed, sides=sides)
        if not reports:
            raise InputError(
                f"too few texts to compare: {len(base.inputs)} in the baseline "
                f"({base.source}), {len(current.inputs)} in the last {window} for {name!r}",
                hint="each side needs at least 5; widen --window or the baseline, or check "
                     "--app names the app that served the traffic")
        run = DriftRun(new_id(), now, name, baseline, window, any(r.drifted for r in reports),
                       time.perf_counter() - started, reports,
                       {"baseline": base.source, "current": current.source})
        runs.save(run)
        return run


def _write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """JSONL, replacing the file only once every row is written."""
    tmp = path.with_name(path.name + ".part")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {exc.strerror}",
                         hint="pick a writable path") from None
