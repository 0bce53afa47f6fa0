"""Evaluation jobs in the server's background: an admin (or the console) asks for an app
version to be scored on a stored dataset (or probed for fairness on it), and polls the job
until it names its run.

Jobs run one at a time: they are model-heavy, and two at once on a small machine slow each
other far more than they gain. A job a restart interrupted runs again at start-up.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from alicerce.access.keys import ApiKey
from alicerce.datasets import Dataset, sample
from alicerce.errors import AlicerceError
from alicerce.evaluate.eval_jobs import EvalJob
from alicerce.evaluate.fairness import Fairness
from alicerce.evaluate.fairness_probes import parse_attributes
from alicerce.evaluate.runner import parse_metrics
from alicerce.evaluate.runs import Run
from alicerce.platform import Alicerce
from alicerce.server.background import Background, Stopping

log = logging.getLogger("alicerce.server")


class EvalRunner:
    def __init__(self, alc: Alicerce, background: Background) -> None:
        self.alc, self.background = alc, background
        self._lock = threading.Lock()

    def start(self, key: ApiKey, app: str, dataset: str, metrics: list[str],
              options: dict[str, Any]) -> EvalJob:
        """Checked before the job exists: the metric groups (or a fairness job's attributes),
        the dataset version and the sample size; the app is checked by the caller (with the
        key)."""
        if options.get("kind") == "fairness":
            options = options | {"attributes": parse_attributes(options.get("attributes"))}
            groups: list[str] = []
        else:
            groups = parse_metrics(metrics)
        version = self.alc.datasets.version(dataset)
        rows = min(version.rows, options.get("limit") or version.rows)
        job = self.alc.eval_jobs.create(key.id, app, version.ref, groups, options, rows)
        self._run(job)
        return job

    def resume(self) -> None:
        for job in self.alc.eval_jobs.unfinished():
            log.info("resuming evaluation job %s (%s on %s)", job.id, job.app, job.dataset)
            self._run(job)

    def _run(self, job: EvalJob) -> None:
        self.background.start(f"alicerce-{job.id}", self._work, job)

    def _work(self, job: EvalJob) -> None:
        jobs = self.alc.eval_jobs
        with self._lock:
            if self.background.stopping.is_set():  # queued behind the last one: next start
                return
            jobs.update(job.id, state="running", done=0)
            try:
                ds = sample(self.alc.datasets.get(job.dataset), job.options.get("limit"),
                            job.options.get("seed"))
                run = self._evaluate(job, ds)
                jobs.update(job.id, state="done", run_id=run.id, done=run.rows, total=run.rows)
            except Stopping:  # its answers are memoised: the rerun asks no model again
                log.info("evaluation job %s stopped with the server; it runs again on the "
                         "next start", job.id)
            except AlicerceError as exc:
                jobs.update(job.id, state="failed", error=str(exc))
            except Exception as exc:  # reported on the job; the server goes on
                log.exception("evaluation job %s failed", job.id)
                jobs.update(job.id, state="failed", error=f"unexpected error: {exc}")

    def _evaluate(self, job: EvalJob, ds: Dataset) -> Run:
        opts = job.options
        if opts.get("kind") == "fairness":  # counts question pairs, not rows
            return Fairness(self.alc, job.app, judge=opts.get("judge", True),
                            judge_model=opts.get("judge_model"),
                            progress=lambda done, total: self._progress(job, done, total),
                            ).run(ds, opts["attributes"], opts.get("personas", False))
        return self.alc.evals.run(job.app, ds, job.metrics, judge_model=opts.get("judge_model"),
                                  progress=lambda done, _: self._progress(job, done))

    def _progress(self, job: EvalJob, done: int, total: int | None = None) -> None:
        self.alc.eval_jobs.update(job.id, done=done, total=total)
        self.background.check()  # a stopping server ends the job between questions
