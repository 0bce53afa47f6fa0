"""Uploads through the server: each a durable job (alicerce/ingest/jobs.py) run in a
background thread, one at a time, resumed when a stopped server starts again."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import asdict

from alicerce.access.keys import ApiKey
from alicerce.errors import AlicerceError, NotFoundError
from alicerce.ingest.jobs import IngestJob
from alicerce.platform import Alicerce, check_collection_name
from alicerce.server.background import Background

log = logging.getLogger("alicerce.server")


class Uploads:
    def __init__(self, alc: Alicerce, on_done: Callable[[str], object],
                 background: Background) -> None:
        self.alc, self._on_done = alc, on_done  # on_done(collection): drop cached answers
        self.background = background  # a stopping server waits for the upload to finish
        self._lock = threading.Lock()

    def start(self, key: ApiKey, collection: str,
              files: list[tuple[str, bytes]]) -> IngestJob:
        """Check the upload whole, keep its files in the home, run it in the background."""
        check_collection_name(collection)
        job = self.alc.jobs.create(key.id, collection, files)
        self.alc.keys.audit(key.id, "collection.ingest", collection,
                            {"files": list(job.files), "job": job.id})
        self._run(job)
        return job

    def resume(self) -> None:
        """Jobs a stopped server left unfinished run again (ingestion is incremental)."""
        for job in self.alc.jobs.recover():
            log.info("resuming upload job %s (%d files)", job.id, len(job.files))
            self._run(job)

    def get(self, key: ApiKey, collection: str, job_id: str) -> IngestJob:
        """A job of `collection` the key started (any, for admin and read); others are not
        found."""
        key.require_collection(collection)
        job = self.alc.jobs.get(job_id)
        if job.collection != collection or (job.caller != key.id and not key.sees_all):
            raise NotFoundError(f"no ingest job {job_id[:40]!r} for {collection!r}",
                                hint="use the id returned by the upload")
        return job

    def _run(self, job: IngestJob) -> None:
        self.background.start(f"alicerce-{job.id}", self._ingest, job)

    def _ingest(self, job: IngestJob) -> None:
        with self._lock:
            if self.background.stopping.is_set():  # queued behind the last one: next start
                return
            jobs = self.alc.jobs
            jobs.start(job.id)
            try:
                # each file on its own: its document id is its name, so a re-upload of
                # policy.md replaces the stored policy.md
                report = self.alc.ingest(jobs.paths(job), job.collection)
                jobs.finish(job.id, "done", asdict(report))
                self._on_done(job.collection)
            except AlicerceError as exc:
                jobs.finish(job.id, "failed", {}, str(exc))
            except Exception as exc:  # reported on the job; the server goes on
                log.exception("upload job %s failed", job.id)
                jobs.finish(job.id, "failed", {}, f"unexpected error: {exc}")
