"""Batch jobs through the server: rows posted as JSON are kept in the home
(`<home>/batches/<job>/`, owner-only), run in a background thread with each row going
through the server's work queue (so batch rows and live requests share the model slots),
and resumed when a stopped server starts again. Each row's tokens are charged to the key
that started the job, rows wait while that key is over its tokens per minute, and a job
whose key is revoked is cancelled at its next row."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alicerce.access.keys import ApiKey
from alicerce.batch.jobs import BatchJob, new_id
from alicerce.batch.ray_rows import ChainRow
from alicerce.batch.runner import MAX_ROWS, runner
from alicerce.errors import AccessError, AlicerceError, InputError, NotFoundError
from alicerce.platform import Alicerce
from alicerce.server.background import Background, Stopping
from alicerce.server.limits import Limiter
from alicerce.server.work import WorkQueue
from alicerce.store.db import private_dir

log = logging.getLogger("alicerce.server")
T = TypeVar("T")


Charge = Callable[[ApiKey, str, int, int], None]  # key, app, prompt and completion tokens


class Batches:
    def __init__(self, alc: Alicerce, work: WorkQueue, limiter: Limiter, charge: Charge,
                 background: Background) -> None:
        self.alc, self.work, self.limiter, self.charge = alc, work, limiter, charge
        self.background = background
        self.root = alc.settings.home / "batches"

    def start(self, key: ApiKey, app: str, rows: list[dict[str, Any]],
              concurrency: int) -> BatchJob:
        """Check the request whole, keep its rows, run it in the background."""
        version = self.alc.chains.version(app)
        if not rows or len(rows) > MAX_ROWS:
            raise InputError(f"a batch takes 1 to {MAX_ROWS} rows, got {len(rows)}",
                             hint="split the rows over several batches")
        cap = self.alc.settings.llm_parallel or 1
        if not 1 <= concurrency <= cap:
            raise InputError(f"concurrency must be 1..{cap} (llm_parallel) here, got "
                             f"{concurrency}", hint="rows share the model slots with live "
                                                    "requests")
        job_id = new_id()
        folder = self.root / job_id
        private_dir(self.root)
        private_dir(folder)
        src, out = folder / "input.jsonl", folder / "output.jsonl"
        src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                       encoding="utf-8")
        src.chmod(0o600)
        job = self.alc.batches.create(key.id, version.name, version.version, src, out,
                                      concurrency, job_id)
        self.alc.keys.audit(key.id, "batch.create", version.ref,
                            {"job": job.id, "rows": len(rows)})
        self._run(job, asyncio.get_running_loop())
        return job

    def resume(self) -> None:
        """Jobs a stopped server left unfinished go on where their output ends."""
        loop = asyncio.get_running_loop()
        for job in self.alc.batches.interrupted(self.root):
            log.info("resuming batch job %s (%s)", job.id, job.ref)
            self._run(job, loop)

    def get(self, key: ApiKey, job_id: str, write: bool = False) -> BatchJob:
        """A job the key started (any, for admin, and for read keys to look at); others
        are not found."""
        job = self.alc.batches.get(job_id, key.owner)
        if write and job.caller != key.id:
            key.require("admin")
        return job

    def output(self, key: ApiKey, job_id: str) -> Path:
        job = self.get(key, job_id)
        path = Path(job.output)
        if not path.exists():
            raise NotFoundError(f"{job.id} has no results yet", hint="poll the job")
        return path

    def _run(self, job: BatchJob, loop: asyncio.AbstractEventLoop) -> None:
        def submit(fn: Callable[[], T]) -> T:
            self.background.check()  # a stopping server starts no new row
            key = self._key(job)
            while key is not None and (delay := self.limiter.wait_s(key)) > 0:
                time.sleep(min(delay, 5.0))
            if self.alc.settings.executor:  # on the cluster: the server's slots stay free
                result = fn()
            else:
                try:
                    future = asyncio.run_coroutine_threadsafe(self.work.call(fn), loop)
                except RuntimeError:  # the event loop is closed
                    raise Stopping from None
                try:
                    result = future.result()
                except concurrent.futures.CancelledError:
                    raise Stopping from None
            if key is not None and isinstance(result, ChainRow):
                self.charge(key, job.app, result.prompt_tokens, result.completion_tokens)
            return result

        self.background.start(f"alicerce-{job.id}", self._guarded, submit, job)

    def _key(self, job: BatchJob) -> ApiKey | None:
        """The key that started `job`, read again for each row (None: the local caller,
        no key). A revoked key's job is cancelled and its rows fail."""
        try:
            key = self.alc.keys.get(job.caller)
        except NotFoundError:
            return None
        if key.revoked_at is not None:
            self.alc.batches.cancel(job.id)
            raise AccessError(f"the API key {key.id} that started {job.id} was revoked; "
                              "the job is cancelled", hint="start it again with a valid key")
        return key

    def _guarded(self, submit: Callable[[Callable[[], Any]], Any], job: BatchJob) -> None:
        try:
            runner(self.alc, submit).run(job)  # on a cluster, its workers start here
        except Stopping:  # rows not written are run again when the server starts
            log.info("batch job %s stopped with the server; it resumes on the next start",
                     job.id)
        except AlicerceError as exc:  # e.g. the Ray cluster cannot be reached
            log.error("batch job %s failed: %s", job.id, exc)
            self.alc.batches.finish(job.id, "failed", str(exc))
        except Exception as exc:  # reported on the job; the server goes on
            log.exception("batch job %s failed", job.id)
            self.alc.batches.finish(job.id, "failed", f"unexpected error: {exc}")
