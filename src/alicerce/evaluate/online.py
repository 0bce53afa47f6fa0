"""Continuous evaluation: score a sample of live traces off the request path, join them
with the users' feedback, and store the scores as evaluation runs of kind "online" (one per
app version), which the server exports as `alicerce_eval_score{kind="online"}`.

Sampling is by a hash of the trace id, so a trace is in or out of the sample whatever the
run that sees it, and each trace is scored at most once. Groundedness uses the evaluation's
check (lexical and numeric support in the passages the answer was given); with a judge model
it adds the judge's groundedness, answer relevance and context relevance (the RAG triad).
Traces rated down, or scored below `review_below`, are put on the review queue.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alicerce.durations import duration_s
from alicerce.errors import AlicerceError, InputError
from alicerce.evaluate.runs import RowResult, Run
from alicerce.evaluate.stats import bootstrap
from alicerce.metrics.grounding import check
from alicerce.metrics.judges import Judge
from alicerce.observe.drift_runs import NOT_TRAFFIC
from alicerce.observe.trace_records import Trace

if TYPE_CHECKING:
    from alicerce.platform import Alicerce


def sampled(trace_id: str, share: float, seed: int = 0) -> bool:
    digest = hashlib.sha256(f"{seed}:{trace_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 < share


@dataclass
class OnlineEvaluation:
    alc: Alicerce
    judge: Judge | None = None
    review_below: float = 0.5

    def run(self, app: str, *, sample: float = 0.05, window: str = "24h",
            limit: int = 1000, seed: int = 0) -> list[Run]:
        if not 0 < sample <= 1:
            raise InputError(f"sample must be a share in (0, 1], got {sample}",
                             hint="e.g. --sample 0.05 scores 5% of the traces")
        since = duration_s(window, "--window")
        runs = self.alc.evals.runs
        traces = [t for t in self.alc.traces.find(app=app.split("@")[0], since_s=since,
                                                  status="ok", limit=10_000)
                  if t.caller not in NOT_TRAFFIC and t.origin == "live"
                  and sampled(t.id, sample, seed)]
        done = runs.scored([t.id for t in traces])
        todo = [t for t in traces if t.id not in done][:limit]
        by_version: dict[int | None, list[Trace]] = {}
        for t in todo:
            by_version.setdefault(t.app_version, []).append(t)
        out = []
        for version, group in sorted(by_version.items(), key=lambda kv: kv[0] or 0):
            started = time.perf_counter()
            results = [self._score(t) for t in group]
            run = Run(runs.new_id().replace("ev-", "on-"), time.time(), "online", group[0].app,
                      version, f"{group[0].app}@{version}" if version else group[0].app,
                      f"traces:{window}", f"sample {sample:g}", self._metrics(),
                      self.judge.name if self.judge else "", summarise(results), results,
                      time.perf_counter() - started, {"sample": sample, "window": window,
                                                      "seed": seed})
            run.count()
            runs.save(run, scored=[(r.trace_id, r.details.get("review", "")) for r in results])
            out.append(run)
        return out

    def _metrics(self) -> list[str]:
        return ["grounding", "feedback"] + (["triad"] if self.judge else [])

    def _score(self, t: Trace) -> RowResult:
        res = RowResult(t.id, t.question, t.answer, t.id, details={"abstained": t.abstained})
        fb = self.alc.traces.feedback_for(t.id)
        thumbs = [f.score for f in fb if f.score]
        if thumbs:
            res.scores["feedback.up"] = float(thumbs[-1] > 0)
        stars = [f.rating for f in fb if f.rating]
        if stars:
            res.scores["feedback.rating"] = float(stars[-1])
        res.scores["abstained"] = float(t.abstained)
        contexts = self._contexts(t)
        if not t.abstained and t.answer.strip():
            try:
                g = check(t.answer, contexts, self.judge)
                res.scores["triad.groundedness"] = g.score
                res.details["groundedness"] = g.as_dict()
            except AlicerceError as exc:
                res.errors.append(f"groundedness: {exc}")
            if self.judge is not None:
                self._triad(self.judge, t, contexts, res)
        low = res.scores.get("triad.groundedness", 1.0) < self.review_below
        if res.scores.get("feedback.up") == 0.0 or low:
            res.details["review"] = "rated down" if not low else "low groundedness"
        return res

    @staticmethod
    def _triad(judge: Judge, t: Trace, contexts: Sequence[str], res: RowResult) -> None:
        for name in ("answer_relevance", "context_relevance"):
            try:
                verdict = (judge.answer_relevance(t.question, t.answer)
                           if name == "answer_relevance"
                           else judge.context_relevance(t.question, contexts))
                res.scores[f"triad.{name}"] = verdict.score
            except AlicerceError as exc:
                res.errors.append(f"{name}: {exc}")

    def _contexts(self, t: Trace) -> list[str]:
        """The passages the answer was given (the context span's kept chunks)."""
        kept: list[int] = []
        for span in t.spans:
            if span.get("name") == "context":
                kept = list(span.get("attrs", {}).get("kept", []))
        hits = self.alc.store.hits(kept) if kept else {}
        return [hits[i].text for i in kept if i in hits]


def summarise(results: Sequence[RowResult]) -> dict[str, Any]:
    names = sorted({k for r in results for k in r.scores})
    return {k: bootstrap([r.scores[k] for r in results if k in r.scores]) for k in names}
