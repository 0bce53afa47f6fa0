"""Evaluating a chain app: each row's inputs run through the app (a traced run, as in
production), each declared output compared with the row's expected value.

Per row and output: `exact.<output>` (normalised exact match), `f1.<output>` (token F1) for
texts, `exact.<output>` for numbers, labels and objects; `chain.succeeded` (the run ended
without error) and `json.first_try` (every JSON step's first reply met its schema). Over the
run: `macro_f1.<output>` for each output whose expected values are a small set of labels.
With the `judge` group, text outputs are judged against the expected text. Groups that need
retrieval sources (`retrieval`, `triad`) do not apply to a chain and are reported skipped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from alicerce.apps.registry import AppVersion
from alicerce.datasets import Dataset, Row
from alicerce.errors import AlicerceError, InputError
from alicerce.evaluate.answers import Errors, Ready, chain_row, spread, take
from alicerce.evaluate.runs import RowResult, Run, memo_key, summarise
from alicerce.evaluate.stats import RESAMPLES, Estimate
from alicerce.evaluate.text import exact_match, f1, task_success
from alicerce.metrics.judges import Judge, Verdict

if TYPE_CHECKING:
    from alicerce.evaluate.runner import Evaluator, Progress

MAX_LABELS = 20  # an output with at most this many distinct expected strings is a label


class ChainEval:
    def __init__(self, ev: Evaluator) -> None:
        self.ev = ev

    def run(self, version: AppVersion, dataset: Dataset, groups: Sequence[str],
            judge: Judge | None, jid: str, cache: bool,
            progress: Progress | None) -> Run:
        rows = [r for r in dataset.rows if r.inputs]
        if not rows:
            raise InputError(f"dataset {dataset.ref} has no chain rows for {version.ref}",
                             hint='each row needs {"inputs": {...}, "expected": {...}}')
        started = time.perf_counter()
        ready, errors = self._spread(version, rows, cache, progress)
        results = []
        for i, row in enumerate(rows):
            results.append(self._row(version, row, groups, judge, jid, cache, ready, errors))
            if progress:
                progress(i + 1, len(rows))
        summary = summarise(results)
        for name, est in macro_f1(rows, results).items():
            summary[f"macro_f1.{name}"] = est
        skipped = [g for g in groups if g not in ("answer", "judge")]
        return Run(self.ev.runs.new_id(), time.time(), "run", version.name, version.version,
                   version.hash[:16], dataset.name, dataset.version, list(groups),
                   judge.name if judge else "", summary, results,
                   time.perf_counter() - started,
                   {"app": version.ref, "app_hash": version.hash, "kind": "chain",
                    "judge": jid or None, "skipped_groups": skipped,
                    "dataset_source": dataset.source})

    def _spread(self, version: AppVersion, rows: Sequence[Row], cache: bool,
                progress: Progress | None) -> tuple[Ready, Errors]:
        """Every row's run on the Ray cluster first, when the setting `executor` names one."""
        if not self.ev.alc.settings.executor:
            return {}, {}
        from alicerce.batch.ray_rows import Call

        return spread(self.ev.alc, self.ev.runs, [
            Call(_key(version, r), "chain", version.ref, inputs=dict(r.inputs)) for r in rows],
            cache, progress)

    def _row(self, version: AppVersion, row: Row, groups: Sequence[str], judge: Judge | None,
             jid: str, cache: bool, ready: Ready, errors: Errors) -> RowResult:
        res = RowResult(row.id, row.question)
        key = _key(version, row)
        try:
            out, _ = self.ev.runs.memo(
                key, lambda: take(ready, errors, key,
                                  lambda: chain_row(self.ev.alc, version.ref, row.inputs)),
                lambda d: d, lambda d: d, cache)
        except AlicerceError as exc:
            res.errors.append(f"the run failed: {exc}")
            res.scores["chain.succeeded"] = 0.0
            return res
        outputs = out["outputs"]
        res.trace_id, res.answer = out["trace_id"], json.dumps(outputs, ensure_ascii=False)
        res.scores["chain.succeeded"] = 1.0
        if out["json_steps"]:
            res.scores["json.first_try"] = float(out["first_try"])
        res.details["outputs"] = outputs
        if "answer" in groups:
            for name, want in row.expected.items():
                if name not in outputs:
                    res.errors.append(f"expected {name!r}, which the app does not output")
                    continue
                got = outputs[name]
                if isinstance(want, dict) and isinstance(want.get("contains"), list):
                    res.scores[f"task.{name}"] = task_success(str(got), want["contains"])
                elif isinstance(want, str) and isinstance(got, str):
                    res.scores[f"exact.{name}"] = exact_match(got, want)
                    res.scores[f"f1.{name}"] = f1(got, want)
                else:
                    res.scores[f"exact.{name}"] = float(got == want)
        for a in out.get("agents", []):  # agent steps: how the loop went
            res.scores["agent.steps"] = float(a["steps"])
            res.scores["agent.tool_errors"] = float(a["tool_errors"])
            res.scores["agent.finished"] = float(a["status"] in ("answered", "direct"))
            if a["actions"]:
                res.scores["agent.valid_actions"] = 1.0 - a["invalid"] / a["actions"]
        res.scores["seconds"] = out.get("latency_ms", 0.0) / 1000
        if "judge" in groups and judge is not None:
            self._judge(row, outputs, judge, jid, res, cache)
        return res

    def _judge(self, row: Row, outputs: dict[str, Any], judge: Judge, jid: str,
               res: RowResult, cache: bool) -> None:
        for name, want in row.expected.items():
            got = outputs.get(name)
            if not (isinstance(want, str) and isinstance(got, str)):
                continue
            def ask(g: str = got, w: str = want) -> Verdict:
                return judge.answer(row.question, g, w)
            try:
                v, _ = self.ev.runs.memo(memo_key("judge", jid, row.question, got, want), ask,
                                         asdict, lambda d: Verdict(**d), cache)
            except AlicerceError as exc:
                res.errors.append(f"judge {name}: {exc}")
                continue
            res.scores[f"judge.{name}"] = v.score


def _key(version: AppVersion, row: Row) -> str:
    return memo_key("chain", version.hash, row.inputs)


def macro_f1(rows: Sequence[Row], results: Sequence[RowResult]) -> dict[str, Estimate]:
    """Macro-F1 of each label-like output (a few distinct expected strings), with a
    bootstrap interval over rows."""
    out: dict[str, Estimate] = {}
    names = {n for r in rows for n, v in r.expected.items() if isinstance(v, str)}
    for name in sorted(names):
        pairs = [(str(r.expected[name]), str(res.details.get("outputs", {}).get(name)))
                 for r, res in zip(rows, results, strict=True)
                 if name in r.expected and "outputs" in res.details]
        labels = {g for g, _ in pairs}
        if not pairs or len(labels) > MAX_LABELS:
            continue
        rng = np.random.default_rng(0)
        samples = [_macro([pairs[i] for i in rng.integers(0, len(pairs), len(pairs))])
                   for _ in range(min(RESAMPLES, 1000))]
        low, high = np.percentile(samples, [2.5, 97.5])
        out[name] = Estimate(_macro(pairs), float(low), float(high), len(pairs))
    return out


def _macro(pairs: Sequence[tuple[str, str]]) -> float:
    labels = sorted({g for g, _ in pairs})
    scores = []
    for lab in labels:
        tp = sum(1 for g, p in pairs if g == lab and p == lab)
        fp = sum(1 for g, p in pairs if g != lab and p == lab)
        fn = sum(1 for g, p in pairs if g == lab and p != lab)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores)) if scores else 0.0
