"""Batch job records: which app version runs over which file into which output, by whom,
how far it got. The output file itself is the record of what is done (batch/runner.py);
these rows hold counts, timings and state for `batch list|show` and `GET /v1/batches`."""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alicerce.errors import InputError, NotFoundError
from alicerce.store.db import connect, transaction

State = Literal["queued", "running", "done", "failed", "cancelled"]
SCHEMA = """
CREATE TABLE IF NOT EXISTS batch_jobs (
    id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    app TEXT NOT NULL,
    app_version INTEGER NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    state TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    pid INTEGER NOT NULL DEFAULT 0,
    cancel INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    busy_s REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS batch_jobs_caller ON batch_jobs (caller, created_at);
"""
_COLS = ("id, caller, app, app_version, input, output, concurrency, state, total, "
         "succeeded, failed, error, pid, cancel, runs, busy_s, created_at, started_at, "
         "finished_at")


@dataclass(frozen=True)
class BatchJob:
    id: str
    caller: str
    app: str
    app_version: int
    input: str
    output: str
    concurrency: int
    state: State
    total: int
    succeeded: int
    failed: int
    error: str
    pid: int
    cancel: bool
    runs: int  # how many times it was started (resumes count)
    busy_s: float  # time spent running, over all its runs
    created_at: float
    started_at: float | None
    finished_at: float | None

    @property
    def ref(self) -> str:
        return f"{self.app}@{self.app_version}"

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    def alive(self) -> bool:
        """Whether the process running it is still there (a kill -9 leaves 'running')."""
        if self.state != "running" or not self.pid:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def as_dict(self) -> dict[str, Any]:
        rows_s = self.done / self.busy_s if self.busy_s else None
        return {"id": self.id, "object": "batch", "app": self.app,
                "app_version": self.app_version, "caller": self.caller, "input": self.input,
                "output": self.output, "concurrency": self.concurrency,
                "status": "interrupted" if self.state == "running" and not self.alive()
                else self.state,
                "request_counts": {"total": self.total, "completed": self.succeeded,
                                   "failed": self.failed},
                "error": self.error or None, "runs": self.runs,
                "busy_s": round(self.busy_s, 3),
                "rows_per_min": round(rows_s * 60, 2) if rows_s else None,
                "created_at": self.created_at, "started_at": self.started_at,
                "finished_at": self.finished_at}


def new_id() -> str:
    return "batch_" + secrets.token_hex(8)


def _job(row: tuple[Any, ...]) -> BatchJob:
    values = list(row)
    values[13] = bool(values[13])  # cancel
    return BatchJob(*values)


class BatchJobs:
    def __init__(self, path: Path | str) -> None:
        self._db = connect(path, SCHEMA)

    def create(self, caller: str, app: str, version: int, input_: Path, output: Path,
               concurrency: int, job_id: str | None = None) -> BatchJob:
        job_id = job_id or new_id()
        with transaction(self._db) as db:
            db.execute("INSERT INTO batch_jobs (id, caller, app, app_version, input, output, "
                       "concurrency, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, "
                       "'queued', ?)", (job_id, caller, app, version, str(input_),
                                        str(output), concurrency, time.time()))
        return self.get(job_id)

    def get(self, job_id: str, caller: str | None = None) -> BatchJob:
        """The job; another caller's is as unknown as a missing one (`caller` None: any)."""
        row = self._db.execute(f"SELECT {_COLS} FROM batch_jobs WHERE id=?",
                               (job_id,)).fetchone()
        if row is None or (caller is not None and row[1] != caller):
            raise NotFoundError(f"no batch job {job_id!r}",
                                hint="`alicerce batch list` shows your jobs")
        return _job(row)

    def interrupted(self, under: Path) -> list[BatchJob]:
        """Unfinished jobs writing under `under` whose process is gone (a server's own)."""
        rows = self._db.execute(f"SELECT {_COLS} FROM batch_jobs WHERE state IN "
                                "('queued', 'running') AND output LIKE ?",
                                (f"{under}/%",)).fetchall()
        return [j for j in map(_job, rows) if not j.alive()]

    def list(self, caller: str | None = None, limit: int = 50) -> list[BatchJob]:
        if not 1 <= limit <= 1000:
            raise InputError(f"limit must be 1..1000, got {limit}", hint="e.g. --limit 50")
        sql = f"SELECT {_COLS} FROM batch_jobs"
        args: tuple[Any, ...] = ()
        if caller is not None:
            sql += " WHERE caller=?"
            args = (caller,)
        rows = self._db.execute(sql + " ORDER BY created_at DESC LIMIT ?",
                                (*args, limit)).fetchall()
        return [_job(r) for r in rows]

    def active_output(self, output: Path) -> BatchJob | None:
        """An unfinished job already writing `output` (two jobs must not share a file)."""
        for row in self._db.execute(
                f"SELECT {_COLS} FROM batch_jobs WHERE output=? AND state IN "
                "('queued', 'running')", (str(output),)):
            return _job(row)
        return None

    def start(self, job_id: str, total: int) -> None:
        with transaction(self._db) as db:
            db.execute("UPDATE batch_jobs SET state='running', pid=?, total=?, runs=runs+1, "
                       "cancel=0, error='', started_at=COALESCE(started_at, ?) WHERE id=?",
                       (os.getpid(), total, time.time(), job_id))

    def progress(self, job_id: str, succeeded: int, failed: int, busy_s: float) -> bool:
        """Store the counts; whether a cancel was asked for."""
        with transaction(self._db) as db:
            db.execute("UPDATE batch_jobs SET succeeded=?, failed=?, busy_s=? WHERE id=?",
                       (succeeded, failed, busy_s, job_id))
            row = db.execute("SELECT cancel FROM batch_jobs WHERE id=?", (job_id,)).fetchone()
        return bool(row and row[0])

    def finish(self, job_id: str, state: State, error: str = "") -> None:
        with transaction(self._db) as db:
            db.execute("UPDATE batch_jobs SET state=?, error=?, pid=0, finished_at=? "
                       "WHERE id=?", (state, error, time.time(), job_id))

    def cancel(self, job_id: str, caller: str | None = None) -> BatchJob:
        """Ask a running job to stop after its current rows; a job no process runs stops
        now. Finished jobs stay as they are."""
        job = self.get(job_id, caller)
        with transaction(self._db) as db:
            if job.alive():
                db.execute("UPDATE batch_jobs SET cancel=1 WHERE id=?", (job_id,))
            elif job.state in ("queued", "running"):
                db.execute("UPDATE batch_jobs SET state='cancelled', pid=0, finished_at=? "
                           "WHERE id=?", (time.time(), job_id))
        return self.get(job_id)

    def close(self) -> None:
        self._db.close()
