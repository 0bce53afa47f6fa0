"""Evaluation runs: one app version (or a collection with the default chain) on one dataset
version, every question answered through the product path (so each answer leaves a trace),
scored per question, aggregated with bootstrap intervals, stored, and logged to MLflow.

Metric groups: `retrieval` (hit rate, MRR, recall@k, nDCG@10 by document id), `answer`
(ROUGE, BLEU, exact match, token F1, embedding cosine, against the reference), `triad`
(context relevance, groundedness, answer relevance) and `judge` (the answer against the
reference, RELEVANT / PARTLY_RELEVANT / NON_RELEVANT). A row that cannot be scored on a
metric (no reference, unknown source ids, a judge that failed) says why; the run goes on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from alicerce.apps.registry import AppVersion
from alicerce.datasets import Dataset, Row
from alicerce.embed import get_embedder
from alicerce.errors import AlicerceError, InputError, NotFoundError
from alicerce.evaluate import retrieval as rm
from alicerce.evaluate.answers import Errors, Ready, answer_row, spread, take
from alicerce.evaluate.chains import ChainEval
from alicerce.evaluate.runs import RowResult, Run, RunStore, memo_key, summarise
from alicerce.evaluate.text import answer_scores
from alicerce.metrics.grounding import Grounding, check
from alicerce.metrics.judges import Judge, Preference, Verdict

if TYPE_CHECKING:
    from alicerce.platform import Alicerce

GROUPS = ("retrieval", "answer", "triad", "judge")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Target:
    """What a run scores: the app (or collection) and the identity of everything its
    answers depend on (app version, collection versions, prompt, model weights, decoding)."""

    app: str
    version: int | None
    identity: str
    lineage: dict[str, Any]
    collections: tuple[str, ...]
    model: str | None = None  # overrides the app's model (`models compare`)
    adapter: str | None = None  # answers with this LoRA adapter (`eval run --adapter`)

    @property
    def ref(self) -> str:
        return f"{self.app}@{self.version}" if self.version else self.app


def parse_metrics(text: str | Sequence[str]) -> list[str]:
    groups = [g.strip() for g in (text.split(",") if isinstance(text, str) else text)
              if g.strip()]
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown or not groups:
        raise InputError(f"unknown metric group(s): {', '.join(unknown) or '(none given)'}",
                         hint="choose from " + ", ".join(GROUPS))
    return [g for g in GROUPS if g in groups]


class Evaluator:
    """Runs, comparisons, pairwise judgements and synthetic data over one home."""

    def __init__(self, alc: Alicerce) -> None:
        self.alc = alc
        self.runs = RunStore(alc.db_path)
        self._judges: dict[str, Judge] = {}

    def judge(self, model: str | None = None) -> Judge:
        name = model or self.alc.settings.judge_model or self.alc.settings.generator
        if name not in self._judges:
            self._judges[name] = Judge(self.alc.generator(name), self.alc.prompts.get)
        return self._judges[name]

    def judge_identity(self, judge: Judge) -> str:
        prompts = [self.alc.prompts.get(n).hash for n in
                   ("judge-answer", "judge-answer-relevance", "judge-context-relevance",
                    "judge-groundedness", "judge-pairwise")]
        return memo_key(judge.name, self.alc.model_identity(judge.gen), prompts)[:16]

    def target(self, app: str, model: str | None = None,
               adapter: str | None = None) -> Target:
        version = self.alc.app(app)
        lineage: dict[str, Any] = {
            **self.alc.answer_versions(app, model=model, adapter=adapter),
            "decoding": self.alc.decoding(None, app if version else None).as_dict()}
        colls = (tuple(c["name"] for c in version.spec["collections"]) if version else (app,))
        return Target(version.name if version else app, version.version if version else None,
                      memo_key(lineage)[:16], lineage, colls, model,
                      lineage.get("adapter") if adapter else None)

    # -- runs ------------------------------------------------------------------------------
    def run(self, app: str, dataset: Dataset, metrics: Sequence[str] = ("retrieval", "answer"),
            *, judge_model: str | None = None, k: int = 5, cache: bool = True,
            model: str | None = None, adapter: str | None = None,
            progress: Progress | None = None) -> Run:
        """Score `app` (answering with `model` and `adapter` if given) on every row of
        `dataset`; stored, and logged to MLflow when on."""
        groups = parse_metrics(metrics)
        version = self.alc.app(app)
        if version is not None and version.spec.get("kind") == "chain":
            return self._chain_run(version, dataset, groups, judge_model, cache, progress)
        target = self.target(app, model, adapter)
        judge = self.judge(judge_model) if {"triad", "judge"} & set(groups) else None
        jid = self.judge_identity(judge) if judge else ""  # once: it reads five prompts
        known = self._known_ids(target)
        started = time.perf_counter()
        ready, errors = self._spread(target, dataset.rows, groups, cache, progress)
        results: list[RowResult] = []
        for i, row in enumerate(dataset.rows):
            results.append(self._score(target, row, groups, judge, jid, known, k, cache,
                                       ready, errors))
            if progress:
                progress(i + 1, len(dataset.rows))
        if "answer" in groups:
            self._cosine(dataset, results)
        seconds = time.perf_counter() - started
        run = Run(self.runs.new_id(), time.time(), "run", target.app, target.version,
                  target.identity, dataset.name, dataset.version, groups,
                  judge.name if judge else "", summarise(results), results, seconds,
                  {**target.lineage, "judge": jid or None,
                   "k": k, "dataset_source": dataset.source,
                   "cosine_embedder": self.alc.settings.embedder,
                   "dataset_problems": [asdict(p) for p in dataset.problems]})
        run.count()
        self.runs.save(run)
        mlflow_run = self.alc.track(lambda ex: ex.log_run(
            f"alicerce/eval/{target.app}", f"{run.id} {target.app}"
            f"{'@' + str(target.version) if target.version else ''} on {dataset.ref}",
            params={"app": target.app, "app_version": target.version,
                    "target": target.identity, "dataset": dataset.name,
                    "dataset_version": dataset.version, "metrics": ",".join(groups),
                    "judge": run.judge, "k": k, "rows": run.rows, "failed_rows": run.failed,
                    "prompt": target.lineage.get("prompt"),
                    "model": target.lineage.get("model"),
                    "model_identity": target.lineage.get("model_identity")},
            metrics={name: est.mean for name, est in run.summary.items()},
            tags={"alicerce.kind": "eval.run", "alicerce.app": target.app,
                  "alicerce.app_version": str(target.version), "alicerce.eval_run": run.id},
            texts={"results.jsonl": "\n".join(json.dumps(asdict(r), ensure_ascii=False)
                                              for r in results)}))
        if mlflow_run:
            run.mlflow_run = mlflow_run
            self.runs.set_mlflow(run.id, mlflow_run)
        return run

    def _chain_run(self, version: AppVersion, dataset: Dataset, groups: Sequence[str],
                   judge_model: str | None, cache: bool, progress: Progress | None) -> Run:
        """A chain app's run: its declared outputs against each row's expected ones."""
        judge = self.judge(judge_model) if "judge" in groups else None
        jid = self.judge_identity(judge) if judge else ""
        run = ChainEval(self).run(version, dataset, groups, judge, jid, cache, progress)
        run.count()
        self.runs.save(run)
        mlflow_run = self.alc.track(lambda ex: ex.log_run(
            f"alicerce/eval/{version.name}", f"{run.id} {version.ref} on {dataset.ref}",
            params={"app": version.name, "app_version": version.version, "kind": "chain",
                    "dataset": dataset.name, "dataset_version": dataset.version,
                    "metrics": ",".join(groups), "rows": run.rows},
            metrics={name: est.mean for name, est in run.summary.items()},
            tags={"alicerce.kind": "eval.run", "alicerce.app": version.name,
                  "alicerce.app_version": str(version.version), "alicerce.eval_run": run.id}))
        if mlflow_run:
            run.mlflow_run = mlflow_run
            self.runs.set_mlflow(run.id, mlflow_run)
        return run

    def pairwise(self, app_a: str, app_b: str, dataset: Dataset, *,
                 judge_model: str | None = None, cache: bool = True,
                 progress: Progress | None = None) -> Run:
        """Which of two apps answers better, question by question: the judge sees each pair
        in both orders (position bias cancels), and gives a preference with confidence.
        Scores: `pairwise.b_wins` (1 B, 0.5 tie, 0 A), `pairwise.confidence`,
        `pairwise.consistent` (both orders agreed)."""
        a, b = self.target(app_a), self.target(app_b)
        judge = self.judge(judge_model)
        jid = self.judge_identity(judge)
        started = time.perf_counter()
        ready, errors = self._spread(a, dataset.rows, ["answer"], cache, progress)
        more, more_errors = self._spread(b, dataset.rows, ["answer"], cache, progress)
        ready.update(more)
        errors.update(more_errors)
        results: list[RowResult] = []
        for i, row in enumerate(dataset.rows):
            results.append(self._pair(a, b, row, judge, jid, cache, ready, errors))
            if progress:
                progress(i + 1, len(dataset.rows))
        run = Run(self.runs.new_id(), time.time(), "pairwise", b.app, b.version,
                  f"{a.identity}..{b.identity}", dataset.name, dataset.version, ["pairwise"],
                  judge.name, summarise(results), results, time.perf_counter() - started,
                  {"a": {**a.lineage, "ref": a.ref}, "b": {**b.lineage, "ref": b.ref},
                   "judge": jid, "dataset_source": dataset.source})
        run.count()
        self.runs.save(run)
        return run

    def _pair(self, a: Target, b: Target, row: Row, judge: Judge, jid: str,
              cache: bool, ready: Ready, errors: Errors) -> RowResult:
        res = RowResult(row.id, row.question)
        try:
            ans_a, ans_b = (self.answer(a, row, cache, ready, errors),
                            self.answer(b, row, cache, ready, errors))
            pref, _ = self.runs.memo(
                memo_key("pairwise", jid, row.question, ans_a["text"], ans_b["text"],
                         row.reference),
                lambda: judge.pairwise(row.question, ans_a["text"], ans_b["text"],
                                       row.reference),
                asdict, lambda d: Preference(**{**d, "orders": tuple(d["orders"])}), cache)
        except AlicerceError as exc:
            res.errors.append(f"pairwise: {exc}")
            return res
        res.answer, res.trace_id = ans_b["text"], ans_b["trace_id"]
        res.scores = {"pairwise.b_wins": {"B": 1.0, "A": 0.0}.get(pref.winner, 0.5),
                      "pairwise.confidence": pref.confidence,
                      "pairwise.consistent": float(pref.consistent)}
        res.details = {"winner": pref.winner, "explanation": pref.explanation,
                       "orders": list(pref.orders), "answer_a": ans_a["text"],
                       "trace_a": ans_a["trace_id"]}
        return res

    def baseline(self, run: Run, ref: str) -> Run:
        """The run to gate `run` against: a run id, or the newest run on the same dataset
        version of the app version a label (or `@N`) names now."""
        if ref.startswith("ev-"):
            return self.runs.get(ref)
        if run.app_version is None:
            raise InputError(f"{run.id} scored the collection {run.app!r}, not a deployed app, "
                             "so it has no labels", hint="give the baseline as a run id (ev-...)")
        version = self.alc.apps.resolve(f"{run.app}@{ref.lstrip('@')}")[1]
        found = [r for r in self.runs.list(run.app, run.dataset_version, version)
                 if r.id != run.id and r.kind == "run"]
        if not found:
            raise NotFoundError(
                f"no run of {run.app}@{version} ({ref}) on {run.dataset}@{run.dataset_version}",
                hint=f"run it first: alicerce eval run --app {run.app}@{version} "
                     f"--dataset {run.lineage.get('dataset_source') or run.dataset}")
        return self.runs.get(found[0].id)

    def _known_ids(self, target: Target) -> set[str]:
        known: set[str] = set()
        for name in target.collections:
            coll = self.alc.store.collection(name)
            if coll is not None:
                known |= set(self.alc.store.document_hashes(coll))
        return known

    def _spread(self, target: Target, rows: Sequence[Row], groups: Sequence[str],
                cache: bool, progress: Progress | None) -> tuple[Ready, Errors]:
        """The answers, asked on the Ray cluster first when the setting `executor` names
        one (answers/spread)."""
        if not self.alc.settings.executor or not {"answer", "triad", "judge"} & set(groups):
            return {}, {}
        from alicerce.batch.ray_rows import Call

        return spread(self.alc, self.runs, [
            Call(self._answer_key(target, r), "answer", target.ref, r.question,
                 dict(r.filters) or None, model=target.model, adapter=target.adapter)
            for r in rows], cache, progress)

    def _score(self, target: Target, row: Row, groups: Sequence[str], judge: Judge | None,
               jid: str, known: set[str], k: int, cache: bool, ready: Ready | None = None,
               errors: Errors | None = None) -> RowResult:
        res = RowResult(row.id, row.question)
        if "retrieval" in groups:
            self._retrieval(target, row, known, k, res)
        if not {"answer", "triad", "judge"} & set(groups):
            return res
        try:
            ans = self.answer(target, row, cache, ready or {}, errors or {})
        except AlicerceError as exc:
            res.errors.append(f"no answer: {exc}")
            return res
        res.answer, res.trace_id = ans["text"], ans["trace_id"]
        res.details.update(abstained=ans["abstained"], latency_ms=ans["latency_ms"],
                           cited=ans["cited"], tokens=ans["tokens"],
                           prompt_tokens=ans.get("prompt_tokens", 0))
        res.scores["answer.abstained"] = float(ans["abstained"])
        if "answer" in groups:
            refs = [row.reference, *row.origin.get("answers", [])]
            if row.reference:
                res.scores.update({f"answer.{m}": v
                                   for m, v in answer_scores(ans["text"], refs).items()})
            else:
                res.errors.append("no reference answer: answer metrics skipped")
        if judge is not None:
            self._judged(row, ans, groups, judge, jid, res, cache)
        return res

    def _retrieval(self, target: Target, row: Row, known: set[str], k: int,
                   res: RowResult) -> None:
        if not row.sources:
            res.errors.append("no expected source ids: retrieval metrics skipped")
            return
        relevant, unknown = resolve_ids(row.sources, known)
        if unknown:
            res.errors.append(f"source ids not in {', '.join(target.collections)}: "
                              f"{', '.join(unknown[:5])}: retrieval metrics skipped")
            return
        depth = max(k, 10)
        try:
            hits = self.alc.retrieve(row.question, target.app, k=depth * 3,
                                     filters=dict(row.filters) or None)
        except AlicerceError as exc:
            res.errors.append(f"retrieval failed: {exc}")
            return
        ranking = list(dict.fromkeys(h.doc_key for h in hits))[:depth]
        rel = frozenset(relevant)
        res.details["ranking"] = ranking[:k]
        res.scores.update({"retrieval.hit_rate": rm.hit(rel, ranking, k),
                           "retrieval.mrr": rm.reciprocal_rank(rel, ranking, k),
                           f"retrieval.recall@{k}": rm.recall(rel, ranking, k),
                           "retrieval.ndcg@10": rm.ndcg(rel, ranking, 10)})

    @staticmethod
    def _answer_key(target: Target, row: Row) -> str:
        return memo_key("answer", target.identity, row.question, row.filters)

    def answer(self, target: Target, row: Row, cache: bool = True, ready: Ready | None = None,
               errors: Errors | None = None) -> dict[str, Any]:
        """The app's answer to a row, memoised by (target identity, question, filters)."""
        key = self._answer_key(target, row)

        def compute() -> dict[str, Any]:
            return take(ready or {}, errors or {}, key, lambda: answer_row(
                self.alc, target.ref, row.question, dict(row.filters) or None, target.model,
                target.adapter))

        def same(v: dict[str, Any]) -> dict[str, Any]:
            return v
        value, _ = self.runs.memo(key, compute, same, same, cache)
        return value

    def _judged(self, row: Row, ans: dict[str, Any], groups: Sequence[str], judge: Judge,
                jid: str, res: RowResult, cache: bool) -> None:
        def verdict(kind: str, fn: Callable[[], Verdict], *inputs: Any) -> Verdict | None:
            try:
                v, _ = self.runs.memo(memo_key(kind, jid, *inputs), fn, asdict,
                                      lambda d: Verdict(**d), cache)
            except AlicerceError as exc:
                res.errors.append(f"{kind}: {exc}")
                return None
            res.details[kind] = {"label": v.label, "explanation": v.explanation}
            return v

        text, contexts = ans["text"], ans["contexts"]
        if "triad" in groups:
            if v := verdict("context_relevance",
                            lambda: judge.context_relevance(row.question, contexts),
                            row.question, contexts):
                res.scores["triad.context_relevance"] = v.score
            if ans["abstained"] or not text.strip():
                res.details["triad"] = "abstained: groundedness and answer relevance skipped"
            else:
                try:
                    g, _ = self.runs.memo(
                        memo_key("groundedness", jid, text, contexts),
                        lambda: check(text, contexts, judge),
                        lambda g: {**asdict(g), "judge": asdict(g.judge) if g.judge else None},
                        _grounding, cache)
                    res.scores["triad.groundedness"] = g.score
                    res.details["groundedness"] = g.as_dict()
                except AlicerceError as exc:
                    res.errors.append(f"groundedness: {exc}")
                if v := verdict("answer_relevance",
                                lambda: judge.answer_relevance(row.question, text),
                                row.question, text):
                    res.scores["triad.answer_relevance"] = v.score
        if "judge" in groups:
            if not row.reference:
                res.errors.append("no reference answer: judge skipped")
            elif v := verdict("judge", lambda: judge.answer(row.question, text, row.reference),
                              row.question, text, row.reference):
                res.scores["judge.correctness"] = v.score

    def _cosine(self, dataset: Dataset, results: list[RowResult]) -> None:
        """Embedding cosine of answer and reference, batched, with the settings' embedder
        (not the app's, so runs of apps on different embedders stay comparable)."""
        pairs = [(r, row.reference) for r, row in zip(results, dataset.rows, strict=True)
                 if row.reference and r.answer.strip()]
        if not pairs:
            return
        embedder = get_embedder(self.alc.settings.embedder, self.alc.settings)
        vecs = np.asarray(embedder.embed_queries([p[0].answer for p in pairs] +
                                                 [p[1] for p in pairs]), dtype=np.float32)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        n = len(pairs)
        for (r, _), a, b in zip(pairs, vecs[:n], vecs[n:], strict=True):
            r.scores["answer.cosine"] = float(a @ b)


def resolve_ids(ids: Sequence[str], known: set[str]) -> tuple[list[str], list[str]]:
    """Expected source ids as the collection's document keys: exact, or the one key that
    ends with "/ID" (a file named by its name while it was ingested by its path)."""
    found: list[str] = []
    unknown: list[str] = []
    for i in ids:
        if i in known:
            found.append(i)
            continue
        tails = [k for k in known if k.endswith("/" + i)]
        (found if len(tails) == 1 else unknown).append(tails[0] if len(tails) == 1 else i)
    return found, unknown


def _grounding(d: dict[str, Any]) -> Grounding:
    return Grounding(d["score"], d["lexical"], d["facts"],
                     Verdict(**d["judge"]) if d["judge"] else None, tuple(d["unsupported"]))
