"""Evaluation runs in the home's SQLite: one row per run (what was scored, on what, the
aggregates with their intervals), one per question (scores, answer, trace, error), and a
memo of the expensive calls (answers, judge verdicts) keyed by everything they depend on,
so a rerun of an unchanged app on an unchanged dataset costs no model call.

A run is written in one transaction when it finishes: a run cut off halfway leaves no
half-run behind, and the memo keeps what it had already computed.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from alicerce.errors import NotFoundError
from alicerce.evaluate.stats import Estimate, bootstrap
from alicerce.store.db import connect, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS eval_runs (
    id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    app TEXT NOT NULL,
    app_version INTEGER,
    target TEXT NOT NULL,
    dataset TEXT NOT NULL,
    dataset_version TEXT NOT NULL,
    metrics TEXT NOT NULL,
    judge TEXT NOT NULL,
    summary TEXT NOT NULL,
    rows INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    seconds REAL NOT NULL,
    lineage TEXT NOT NULL,
    mlflow_run TEXT
);
CREATE TABLE IF NOT EXISTS eval_results (
    run_id TEXT NOT NULL REFERENCES eval_runs(id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    row_id TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    scores TEXT NOT NULL,
    details TEXT NOT NULL,
    errors TEXT NOT NULL,
    PRIMARY KEY (run_id, row_id)
);
CREATE TABLE IF NOT EXISTS online_scored (
    trace_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    review TEXT NOT NULL,
    reviewed INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS eval_memo (
    key TEXT PRIMARY KEY,
    at REAL NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS eval_runs_app ON eval_runs (app, dataset_version, at)
"""
T = TypeVar("T")


@dataclass
class RowResult:
    """One question's scores (`metric -> value`, absent when not computable) and why any
    metric is missing."""

    row_id: str
    question: str
    answer: str = ""
    trace_id: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class Run:
    id: str
    at: float
    kind: str  # "run", "pairwise", "redteam" or "online"
    app: str
    app_version: int | None
    target: str
    dataset: str
    dataset_version: str
    metrics: list[str]
    judge: str
    summary: dict[str, Estimate]
    results: list[RowResult]
    seconds: float
    lineage: dict[str, Any]
    mlflow_run: str | None = None
    rows: int = 0
    failed: int = 0  # rows with at least one metric that could not be computed

    def count(self) -> None:
        self.rows, self.failed = len(self.results), sum(1 for r in self.results if r.errors)

    def as_dict(self, with_rows: bool = False) -> dict[str, Any]:
        """JSON for the CLI and HTTP: the intervals as objects; rows only when asked."""
        out = {k: v for k, v in asdict(self).items() if k != "results"}
        out["summary"] = {m: e.as_dict() for m, e in self.summary.items()}
        if with_rows:
            out["results"] = [asdict(r) for r in self.results]
        return out

    @property
    def label(self) -> str:
        where = f"{self.app}@{self.app_version}" if self.app_version else self.app
        return f"{self.id} ({where} on {self.dataset}@{self.dataset_version})"


def memo_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False,
                                     default=str).encode()).hexdigest()


class RunStore:
    def __init__(self, path: Path | str) -> None:
        self._db = connect(path, SCHEMA)

    def new_id(self) -> str:
        return "ev-" + secrets.token_hex(4)

    def memo(self, key: str, compute: Callable[[], T], encode: Callable[[T], Any],
             decode: Callable[[Any], T], use: bool = True) -> tuple[T, bool]:
        """The stored value for `key`, or compute and store it; says whether it was stored.
        Each value commits on its own, so an interrupted run keeps what it computed."""
        if use:
            row = self._db.execute("SELECT value FROM eval_memo WHERE key=?", (key,)).fetchone()
            if row is not None:
                return decode(json.loads(row[0])), True
        value = compute()
        self.put(key, encode(value))
        return value, False

    def has(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM eval_memo WHERE key=?", (key,)).fetchone() \
            is not None

    def put(self, key: str, encoded: Any) -> None:
        with transaction(self._db) as db:
            db.execute("INSERT INTO eval_memo VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE "
                       "SET at = excluded.at, value = excluded.value",
                       (key, time.time(), json.dumps(encoded, ensure_ascii=False)))

    def save(self, run: Run, scored: Sequence[tuple[str, str]] = ()) -> None:
        """The run and its rows in one transaction; for an online run, `scored` marks its
        traces (with why each needs review, or "") in the same one."""
        with transaction(self._db) as db:
            db.executemany("INSERT INTO online_scored (trace_id, run_id, review) VALUES "
                           "(?, ?, ?) ON CONFLICT (trace_id) DO UPDATE SET run_id = "
                           "excluded.run_id, review = excluded.review, reviewed = 0",
                           [(t, run.id, why) for t, why in scored])
            db.execute("INSERT INTO eval_runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (
                run.id, run.at, run.kind, run.app, run.app_version, run.target, run.dataset,
                run.dataset_version, json.dumps(run.metrics), run.judge,
                json.dumps({k: v.as_dict() for k, v in run.summary.items()}),
                run.rows, run.failed, run.seconds, json.dumps(run.lineage),
                run.mlflow_run))
            db.executemany("INSERT INTO eval_results VALUES (?,?,?,?,?,?,?,?,?)", [
                (run.id, i, r.row_id, r.question, r.answer, r.trace_id, json.dumps(r.scores),
                 json.dumps(r.details, ensure_ascii=False), json.dumps(r.errors))
                for i, r in enumerate(run.results)])

    def set_mlflow(self, run_id: str, mlflow_run: str) -> None:
        with transaction(self._db) as db:
            db.execute("UPDATE eval_runs SET mlflow_run=? WHERE id=?", (mlflow_run, run_id))

    def get(self, run_id: str) -> Run:
        row = self._db.execute("SELECT * FROM eval_runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no evaluation run {run_id!r}",
                                hint="`alicerce eval list` shows the runs")
        return self._run(row, with_results=True)

    def scored(self, trace_ids: Sequence[str]) -> set[str]:
        """Which of these traces an online run has already scored."""
        out: set[str] = set()
        for start in range(0, len(trace_ids), 500):
            part = list(trace_ids[start:start + 500])
            out.update(r[0] for r in self._db.execute(
                f"SELECT trace_id FROM online_scored WHERE trace_id IN "
                f"({','.join('?' * len(part))})", part))
        return out

    def review_queue(self, app: str | None = None, limit: int = 100
                     ) -> list[tuple[str, str]]:
        """(trace id, why) of traces awaiting review, oldest first: rated down by a user,
        or scored low by an online run. Driven from the feedback index, not the traces
        table: at a million traces, scanning them took over a second."""
        where, args = ("AND t.app = ?", [app]) if app else ("", [])
        sql = (
            "SELECT id, MIN(why) FROM ("
            "  SELECT t.id, 'rated down' why, t.at FROM feedback f JOIN traces t "
            "  ON t.id = f.trace_id WHERE f.score = -1 " + where +
            "  UNION SELECT t.id, o.review, t.at FROM online_scored o JOIN traces t "
            "  ON t.id = o.trace_id WHERE o.review != '' " + where +
            ") q WHERE NOT EXISTS (SELECT 1 FROM online_scored d WHERE d.trace_id = q.id "
            "AND d.reviewed = 1) GROUP BY id ORDER BY MIN(at) LIMIT ?")
        return [(r[0], r[1]) for r in self._db.execute(sql, (*args, *args, limit))]

    def mark_reviewed(self, trace_ids: Sequence[str]) -> None:
        with transaction(self._db) as db:
            db.executemany("INSERT INTO online_scored (trace_id, run_id, review, reviewed) "
                           "VALUES (?, '', '', 1) ON CONFLICT(trace_id) DO UPDATE SET "
                           "reviewed = 1", [(t,) for t in trace_ids])

    def latest(self) -> list[Run]:
        """The newest run of each app version, kind and dataset (what the gauges show)."""
        sql = ("SELECT r.* FROM eval_runs r JOIN (SELECT app, COALESCE(app_version, -1) v, "
               "kind, dataset, MAX(at) at FROM eval_runs GROUP BY 1, 2, 3, 4) l "
               "ON l.app = r.app AND l.v = COALESCE(r.app_version, -1) AND l.kind = r.kind "
               "AND l.dataset = r.dataset AND l.at = r.at")
        return [self._run(r, with_results=False) for r in self._db.execute(sql)]

    def list(self, app: str | None = None, dataset_version: str | None = None,
             app_version: int | None = None, limit: int = 50,
             kind: str | None = None) -> list[Run]:
        """Runs, newest first, without their per-question results."""
        where, args = ["1=1"], []
        for col, val in (("app", app), ("dataset_version", dataset_version),
                         ("app_version", app_version), ("kind", kind)):
            if val is not None:
                where.append(f"{col}=?")
                args.append(val)
        sql = (f"SELECT * FROM eval_runs WHERE {' AND '.join(where)} "
               f"ORDER BY at DESC LIMIT {int(limit)}")
        return [self._run(r, with_results=False) for r in self._db.execute(sql, args)]

    def _run(self, row: sqlite3.Row | tuple[Any, ...], with_results: bool) -> Run:
        (rid, at, kind, app, app_version, target, dataset, dversion, metrics, judge, summary,
         rows, failed, seconds, lineage, mlflow_run) = row
        results = []
        if with_results:
            results = [RowResult(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]),
                                 json.loads(r[6])) for r in self._db.execute(
                "SELECT row_id, question, answer, trace_id, scores, details, errors "
                "FROM eval_results WHERE run_id=? ORDER BY seq", (rid,))]
        return Run(rid, at, kind, app, app_version, target, dataset, dversion,
                   json.loads(metrics), judge,
                   {k: Estimate(v["mean"], v["low"], v["high"], v["n"])
                    for k, v in json.loads(summary).items()},
                   results, seconds, json.loads(lineage), mlflow_run, rows, failed)

    def close(self) -> None:
        self._db.close()


def summarise(results: Sequence[RowResult]) -> dict[str, Any]:
    """Each metric's mean and 95% interval over the rows that have it."""
    names = sorted({m for r in results for m in r.scores})
    return {m: bootstrap([r.scores[m] for r in results if m in r.scores]) for m in names}
