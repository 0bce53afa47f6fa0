"""Upload jobs that survive the server: a row in the home's SQLite and the uploaded files in
`<home>/uploads/<job id>/` (owner-only), removed when the job ends.

A server killed during a job finds it again at start-up and runs it once more: ingestion
is incremental, so what was committed is kept and the rest is done (docs/ingestion.md).
Each upload is checked whole before anything is written: a bad name, a hidden file, an
unsupported type or a duplicate is a 400 that names the file, and leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alicerce.errors import InputError, NotFoundError
from alicerce.ingest.loaders import LOADERS
from alicerce.store.db import add_columns, connect, private_dir, transaction

State = Literal["queued", "running", "done", "failed"]
SCHEMA = """
CREATE TABLE IF NOT EXISTS ingest_jobs (
    id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    collection TEXT NOT NULL,
    files TEXT NOT NULL,
    state TEXT NOT NULL,
    report TEXT NOT NULL DEFAULT '{}',
    error TEXT NOT NULL DEFAULT '',
    resumed INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)
"""
MAX_NAME_BYTES = 255


@dataclass(frozen=True)
class IngestJob:
    id: str
    caller: str
    collection: str
    files: tuple[str, ...]
    state: State
    report: dict[str, Any]
    error: str
    resumed: int
    created_at: float
    updated_at: float


def check_name(name: str) -> str:
    """The file name an upload is stored under (its last path part), or InputError saying
    what is wrong."""
    shown = name.encode("unicode_escape").decode()[:80]
    if "\x00" in name:
        raise InputError(f"file name {shown!r} has a NUL byte", hint="rename the file")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]  # a path's folders are dropped
    shown = name.encode("unicode_escape").decode()[:80]
    if not name.strip() or name in (".", ".."):
        raise InputError("a file has no name", hint="send each file with its name")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InputError(f"file name {shown}... is over {MAX_NAME_BYTES} bytes",
                         hint="rename the file")
    if name.startswith("."):
        raise InputError(f"{shown!r} is a hidden file; hidden files are not ingested",
                         hint="rename it without the leading dot")
    if Path(name).suffix.lower() not in LOADERS:
        raise InputError(f"{shown!r} has an unsupported type",
                         hint="supported: " + " ".join(sorted(LOADERS)))
    return name


class IngestJobs:
    def __init__(self, db_path: Path | str, folder: Path) -> None:
        self._db = connect(db_path, SCHEMA)
        # Which server's folder holds a job's files: replicas sharing a database resume only
        # their own jobs ('' = a job from before this column, in a one-server home).
        add_columns(self._db, "ingest_jobs", {"spool": "TEXT NOT NULL DEFAULT ''"})
        self.folder = folder
        self.spool = f"{socket.gethostname()}:{folder.resolve()}"

    def create(self, caller: str, collection: str,
               files: Sequence[tuple[str, bytes]]) -> IngestJob:
        """Check every name, store the files, then the job (queued)."""
        if not files:
            raise InputError("no files were uploaded", hint="send multipart field 'files'")
        names = [check_name(n) for n, _ in files]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise InputError(f"{dup!r} is uploaded twice", hint="send each file once")
        job_id = f"job-{secrets.token_hex(6)}"
        target = self.folder / job_id
        private_dir(self.folder)
        try:
            target.mkdir(mode=0o700)
            for name, (_, data) in zip(names, files, strict=True):
                fd = os.open(target / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
            now = time.time()
            with transaction(self._db) as db:
                db.execute("INSERT INTO ingest_jobs (id, caller, collection, files, state, "
                           "created_at, updated_at, spool) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                           (job_id, caller, collection, json.dumps(names), now, now,
                            self.spool))
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return self.get(job_id)

    def get(self, job_id: str) -> IngestJob:
        row = self._db.execute("SELECT * FROM ingest_jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no ingest job {job_id[:40]!r}",
                                hint="use the id returned by the upload")
        return IngestJob(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4],
                         json.loads(row[5]), row[6], row[7], row[8], row[9])

    def paths(self, job: IngestJob) -> list[Path]:
        return [self.folder / job.id / name for name in job.files]

    def start(self, job_id: str) -> None:
        with transaction(self._db) as db:
            db.execute("UPDATE ingest_jobs SET state='running', updated_at=? WHERE id=?",
                       (time.time(), job_id))

    def finish(self, job_id: str, state: State, report: dict[str, Any], error: str = "") -> None:
        """Record the outcome, then remove the job's files."""
        with transaction(self._db) as db:
            db.execute("UPDATE ingest_jobs SET state=?, report=?, error=?, updated_at=? "
                       "WHERE id=?", (state, json.dumps(report, default=str), error,
                                      time.time(), job_id))
        shutil.rmtree(self.folder / job_id, ignore_errors=True)

    def recover(self) -> list[IngestJob]:
        """At start-up: this server's jobs it left queued or running, to run again (marked
        failed when their files are gone); folders no unfinished job owns are removed.
        Other replicas' jobs are theirs to resume."""
        again = []
        rows = self._db.execute("SELECT id FROM ingest_jobs WHERE state IN "
                                "('queued', 'running') AND spool IN (?, '') "
                                "ORDER BY created_at", (self.spool,)).fetchall()
        for (job_id,) in rows:
            job = self.get(job_id)
            if all(p.is_file() for p in self.paths(job)):
                with transaction(self._db) as db:
                    db.execute("UPDATE ingest_jobs SET state='queued', resumed=resumed+1, "
                               "updated_at=? WHERE id=?", (time.time(), job_id))
                again.append(self.get(job_id))
            else:
                self.finish(job_id, "failed", job.report, "the server stopped during the job "
                            "and its files are gone; upload them again")
        keep = {j.id for j in again}
        if self.folder.is_dir():
            for leftover in self.folder.iterdir():
                if leftover.name not in keep:
                    shutil.rmtree(leftover, ignore_errors=True)
        return again

    def close(self) -> None:
        self._db.close()
