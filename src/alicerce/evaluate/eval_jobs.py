"""Evaluation jobs started over HTTP (or from the console): what to run, who asked, how far
it got, and the run it produced, in the home's database.

A job runs in the server's background; one stopped by a restart is started again and costs
little the second time (answers and verdicts come from the evaluation memo).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from alicerce.errors import NotFoundError
from alicerce.store.db import connect, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS eval_jobs (
    id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    app TEXT NOT NULL,
    dataset TEXT NOT NULL,
    metrics TEXT NOT NULL,
    options TEXT NOT NULL,
    state TEXT NOT NULL,
    done INTEGER NOT NULL,
    total INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    error TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS eval_jobs_at ON eval_jobs (created_at)
"""
State = Literal["queued", "running", "done", "failed"]
_COLS = ("id, caller, app, dataset, metrics, options, state, done, total, run_id, error, "
         "created_at, updated_at")


@dataclass(frozen=True)
class EvalJob:
    id: str
    caller: str
    app: str
    dataset: str  # a stored dataset, NAME@N
    metrics: list[str]
    options: dict[str, Any]  # judge_model, limit, seed
    state: State
    done: int
    total: int
    run_id: str
    error: str
    created_at: float
    updated_at: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class EvalJobs:
    def __init__(self, path: Path | str) -> None:
        self._db = connect(path, SCHEMA)

    def create(self, caller: str, app: str, dataset: str, metrics: list[str],
               options: dict[str, Any], total: int) -> EvalJob:
        job_id, now = "ej-" + secrets.token_hex(6), time.time()
        with transaction(self._db) as db:
            db.execute(f"INSERT INTO eval_jobs ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, "
                       "?, '', '', ?, ?)", (job_id, caller, app, dataset, json.dumps(metrics),
                                            json.dumps(options), total, now, now))
        return self.get(job_id)

    def get(self, job_id: str, caller: str | None = None) -> EvalJob:
        """The job (another caller's reads as missing unless `caller` is None)."""
        row = self._db.execute(f"SELECT {_COLS} FROM eval_jobs WHERE id=?",
                               (job_id,)).fetchone()
        if row is None or (caller is not None and row[1] != caller):
            raise NotFoundError(f"no evaluation job {job_id[:64]!r}",
                                hint="GET /v1/evals/jobs lists yours")
        return _job(row)

    def recent(self, caller: str | None = None, limit: int = 50) -> list[EvalJob]:
        where, args = ("WHERE caller=?", [caller]) if caller is not None else ("", [])
        return [_job(r) for r in self._db.execute(
            f"SELECT {_COLS} FROM eval_jobs {where} ORDER BY created_at DESC LIMIT ?",
            (*args, max(1, min(limit, 1000))))]

    def update(self, job_id: str, *, state: State | None = None, done: int | None = None,
               total: int | None = None, run_id: str | None = None,
               error: str | None = None) -> None:
        sets: list[str] = ["updated_at=?"]
        args: list[Any] = [time.time()]
        for col, val in (("state", state), ("done", done), ("total", total), ("run_id", run_id),
                         ("error", error[:2000] if error else error)):
            if val is not None:
                sets.append(f"{col}=?")
                args.append(val)
        with transaction(self._db) as db:
            db.execute(f"UPDATE eval_jobs SET {', '.join(sets)} WHERE id=?", (*args, job_id))

    def unfinished(self) -> list[EvalJob]:
        return [_job(r) for r in self._db.execute(
            f"SELECT {_COLS} FROM eval_jobs WHERE state IN ('queued', 'running') "
            "ORDER BY created_at")]

    def close(self) -> None:
        self._db.close()


def _job(r: Any) -> EvalJob:
    return EvalJob(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]), r[6], int(r[7]),
                   int(r[8]), r[9], r[10], float(r[11]), float(r[12]))
