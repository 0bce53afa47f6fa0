"""Tuning run records: who trained what on which data with which settings, how far it got,
and the metrics it logged; what `tune list|show` print and what resuming reads back.

A record is written before training starts and updated at every logged step, so a run
killed with `kill -9` is found as `running` with a dead pid (shown as `interrupted`) and
resumes from its last checkpoint with the same settings and data version.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alicerce.errors import InputError, NotFoundError
from alicerce.store.db import connect, transaction
from alicerce.tune.config import TuneConfig

State = Literal["running", "done", "failed", "stopped", "interrupted"]
Progress = Callable[[int, int, dict[str, float]], None]  # step, total steps, latest logs
SCHEMA = """
CREATE TABLE IF NOT EXISTS tune_runs (
    id TEXT PRIMARY KEY,
    caller TEXT NOT NULL,
    name TEXT NOT NULL,
    base TEXT NOT NULL,
    base_identity TEXT NOT NULL,
    config TEXT NOT NULL,
    data TEXT NOT NULL,
    data_version TEXT NOT NULL,
    rows_train INTEGER NOT NULL,
    rows_eval INTEGER NOT NULL,
    state TEXT NOT NULL,
    error TEXT NOT NULL DEFAULT '',
    pid INTEGER NOT NULL DEFAULT 0,
    history TEXT NOT NULL DEFAULT '[]',
    result TEXT NOT NULL DEFAULT '{}',
    code_version TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS tune_runs_caller ON tune_runs (caller, created_at);
"""


@dataclass(frozen=True)
class TuneRun:
    id: str
    caller: str
    name: str
    base: str
    base_identity: str
    config: TuneConfig
    data: str
    data_version: str
    rows_train: int
    rows_eval: int
    state: State
    error: str
    pid: int
    history: list[dict[str, float]] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    code_version: str = ""
    created_at: float = 0.0
    finished_at: float | None = None


class TuneRuns:
    def __init__(self, path: Path | str) -> None:
        self._db = connect(path, SCHEMA)

    def close(self) -> None:
        self._db.close()

    def start(self, *, caller: str, name: str, base: str, base_identity: str,
              config: TuneConfig, data: str, data_version: str, rows: tuple[int, int],
              code_version: str) -> TuneRun:
        run_id = f"tune-{time.strftime('%Y%m%d')}-{secrets.token_hex(4)}"
        with transaction(self._db):
            self._db.execute(
                "INSERT INTO tune_runs (id, caller, name, base, base_identity, config, data, "
                "data_version, rows_train, rows_eval, state, pid, code_version, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                (run_id, caller, name, base, base_identity, config.model_dump_json(), data,
                 data_version, rows[0], rows[1], os.getpid(), code_version, time.time()))
        return self.get(run_id, caller)

    def resume(self, run_id: str, caller: str) -> TuneRun:
        """Mark a stopped or interrupted run as running again in this process."""
        run = self.get(run_id, caller)
        if run.state not in ("stopped", "interrupted", "failed"):
            raise InputError(f"run {run_id} is {run.state}",
                             hint="only a stopped, failed or interrupted run resumes")
        with transaction(self._db):
            self._db.execute("UPDATE tune_runs SET state='running', pid=?, error='', "
                             "finished_at=NULL WHERE id=?", (os.getpid(), run_id))
        return self.get(run_id, caller)

    def log(self, run_id: str, history: list[dict[str, float]]) -> None:
        with transaction(self._db):
            self._db.execute("UPDATE tune_runs SET history=? WHERE id=?",
                             (json.dumps(history), run_id))

    def finish(self, run_id: str, state: State, result: dict[str, Any],
               error: str = "") -> None:
        with transaction(self._db):
            self._db.execute("UPDATE tune_runs SET state=?, result=?, error=?, finished_at=? "
                             "WHERE id=?", (state, json.dumps(result), error[:2000],
                                            time.time(), run_id))

    def get(self, run_id: str, caller: str) -> TuneRun:
        """A run the caller owns ("admin" sees all); another's is as good as missing."""
        row = self._db.execute(f"SELECT {_COLS} FROM tune_runs WHERE id=?",
                               (run_id,)).fetchone()
        if row is None or (caller != "admin" and row[1] != caller):
            raise NotFoundError(f"no tuning run {run_id!r}", hint="see `alicerce tune list`")
        return _build(row)

    def list(self, caller: str, limit: int = 50) -> list[TuneRun]:
        where, args = ("", ()) if caller == "admin" else ("WHERE caller=?", (caller,))
        rows = self._db.execute(f"SELECT {_COLS} FROM tune_runs {where} ORDER BY created_at "
                                "DESC LIMIT ?", (*args, max(1, min(limit, 1000))))
        return [_build(r) for r in rows]


_COLS = ("id, caller, name, base, base_identity, config, data, data_version, rows_train, "
         "rows_eval, state, error, pid, history, result, code_version, created_at, "
         "finished_at")


def _build(r: Any) -> TuneRun:
    state = r[10]
    if state == "running" and not _alive(int(r[12])):
        state = "interrupted"
    return TuneRun(r[0], r[1], r[2], r[3], r[4], TuneConfig.model_validate_json(r[5]), r[6],
                   r[7], int(r[8]), int(r[9]), state, r[11], int(r[12]), json.loads(r[13]),
                   json.loads(r[14]), r[15], float(r[16]),
                   None if r[17] is None else float(r[17]))


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
