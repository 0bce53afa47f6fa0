"""Drift runs: pick the two samples (an eval dataset or a past window of traces, against
a recent window), embed them, compare each side (the questions, the answers), and keep
every run in the home's SQLite so the history can be plotted and the latest exported as
Prometheus gauges.

Embeddings are memoised by text hash and embedder, so a periodic run over a sliding window
embeds only the traces that arrived since the last one.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alicerce.datasets import load as load_dataset
from alicerce.durations import duration_s
from alicerce.embed.base import Embedder
from alicerce.errors import InputError, NotFoundError
from alicerce.observe.drift import SideReport, Test, Topic, compare
from alicerce.store.db import connect, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS drift_runs (
    id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    app TEXT NOT NULL,
    baseline TEXT NOT NULL,
    "window" TEXT NOT NULL,  -- quoted: a reserved word in PostgreSQL
    drifted INTEGER NOT NULL,
    seconds REAL NOT NULL,
    sides TEXT NOT NULL,
    sources TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS drift_runs_app_at ON drift_runs (app, at);
CREATE TABLE IF NOT EXISTS text_vectors (
    key TEXT PRIMARY KEY,
    vector BLOB NOT NULL,
    used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS text_vectors_used ON text_vectors (used)
"""
# Memoised vectors unused this long are dropped: a week's baseline plus its window reuse
# everything younger.
MEMO_KEEP_S = 14 * 86400
# Callers whose traces are not production traffic.
NOT_TRAFFIC = ("eval", "redteam", "monitor")


@dataclass(frozen=True)
class Sample:
    """The texts of one side of a comparison, and where they came from."""

    inputs: list[str]
    outputs: list[str]
    source: str


@dataclass(frozen=True)
class DriftRun:
    id: str
    at: float
    app: str
    baseline: str
    window: str
    drifted: bool
    seconds: float
    sides: list[SideReport]
    sources: dict[str, str]  # baseline / current: what each sample was

    def side(self, name: str) -> SideReport | None:
        return next((s for s in self.sides if s.side == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "app": self.app, "baseline": self.baseline,
                "window": self.window, "drifted": self.drifted, "seconds": self.seconds,
                "sources": self.sources, "sides": [s.as_dict() for s in self.sides]}


class DriftRuns:
    def __init__(self, path: Path | str) -> None:
        self._db = connect(path, SCHEMA)

    def close(self) -> None:
        self._db.close()

    def save(self, run: DriftRun) -> None:
        with transaction(self._db) as db:
            db.execute("INSERT INTO drift_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (run.id, run.at, run.app, run.baseline, run.window, int(run.drifted),
                        run.seconds, json.dumps([s.as_dict() for s in run.sides]),
                        json.dumps(run.sources)))

    def get(self, run_id: str) -> DriftRun:
        row = self._db.execute("SELECT * FROM drift_runs WHERE id=?", (run_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no drift run {run_id!r}", hint="see `alicerce drift --history`")
        return _run(row)

    def history(self, app: str | None = None, limit: int = 50) -> list[DriftRun]:
        where, args = ("WHERE app=?", [app]) if app else ("", [])
        return [_run(r) for r in self._db.execute(
            f"SELECT * FROM drift_runs {where} ORDER BY at DESC LIMIT ?", (*args, limit))]

    def latest(self) -> list[DriftRun]:
        """The newest run of every app (what the gauges show)."""
        return [_run(r) for r in self._db.execute(
            "SELECT d.* FROM drift_runs d JOIN (SELECT app, MAX(at) at FROM drift_runs "
            "GROUP BY app) l ON l.app = d.app AND l.at = d.at")]

    def traces(self, app: str, start: float, end: float, limit: int) -> Sample:
        """Production traces of an app in [start, end): a uniform sample of at most
        `limit`. Failed requests have no answer: they join the inputs only."""
        rows = self._db.execute(
            "SELECT question, answer, status FROM traces WHERE app=? AND at>=? AND at<? "
            "AND origin='live' "
            f"AND caller NOT IN ({','.join('?' * len(NOT_TRAFFIC))}) "
            "ORDER BY random() LIMIT ?", (app, start, end, *NOT_TRAFFIC, limit)).fetchall()
        return Sample([r[0] for r in rows], [r[1] for r in rows if r[2] == "ok" and r[1]],
                      f"traces {_stamp(start)} to {_stamp(end)} UTC")

    def active_apps(self, since: float) -> list[str]:
        """Apps with production traffic since `since`."""
        return [r[0] for r in self._db.execute(
            "SELECT DISTINCT app FROM traces WHERE at >= ? AND origin='live' AND caller NOT IN "
            f"({','.join('?' * len(NOT_TRAFFIC))})", (since, *NOT_TRAFFIC))]

    # -- the embedding memo -------------------------------------------------------------
    def vectors(self, embedder: Embedder, texts: Sequence[str], kind: str) -> np.ndarray:
        """L2-normalised rows, computing only the texts not seen before with this embedder;
        the memo forgets vectors unused for MEMO_KEEP_S."""
        keys = [hashlib.sha1(f"{embedder.name}\0{kind}\0{t}".encode()).hexdigest()
                for t in texts]
        have: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            part = keys[start:start + 500]
            have.update((k, np.frombuffer(v, dtype=np.float32)) for k, v in self._db.execute(
                f"SELECT key, vector FROM text_vectors WHERE key IN "
                f"({','.join('?' * len(part))})", part))
        missing = [i for i, k in enumerate(keys) if k not in have]
        fresh = np.zeros((0, 0), dtype=np.float32)
        if missing:
            todo = [texts[i] for i in missing]
            fresh = np.asarray(embedder.embed_queries(todo) if kind == "query"
                               else embedder.embed_passages(todo), dtype=np.float32)
            have.update((keys[i], fresh[j]) for j, i in enumerate(missing))
        now, new = time.time(), {keys[i] for i in missing}
        with transaction(self._db) as db:
            db.executemany("INSERT INTO text_vectors VALUES (?, ?, ?) ON CONFLICT (key) DO "
                           "UPDATE SET vector = excluded.vector, used = excluded.used",
                           [(keys[i], fresh[j].tobytes(), now) for j, i in enumerate(missing)])
            db.executemany("UPDATE text_vectors SET used = ? WHERE key = ?",
                           [(now, k) for k in set(keys) - new])
            db.execute("DELETE FROM text_vectors WHERE used < ?", (now - MEMO_KEEP_S,))
        out = np.vstack([have[k] for k in keys]).astype(np.float64) if keys else \
            np.zeros((0, 1))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        normalised: np.ndarray = out / np.where(norms == 0, 1, norms)
        return normalised


def _run(row: sqlite3.Row | tuple[Any, ...]) -> DriftRun:
    sides = []
    for s in json.loads(row[7]):
        sides.append(SideReport(
            s["side"], s["n_baseline"], s["n_current"], s["drifted"],
            [Test(**t) for t in s["tests"]], [Topic(**t) for t in s["topics"]],
            [tuple(x) for x in s["new_terms"]], s["lengths"]))
    return DriftRun(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], sides,
                    json.loads(row[8]))


# -- samples ------------------------------------------------------------------------------
def dataset_sample(path: str) -> Sample:
    ds = load_dataset(path)
    return Sample([r.question for r in ds.rows], [r.reference for r in ds.rows if r.reference],
                  f"dataset {ds.ref}")


def baseline_sample(runs: DriftRuns, app: str, baseline: str, window_s: float,
                    now: float, limit: int) -> Sample:
    """`dataset:PATH` (skew: the eval set against production) or `window:7d` (drift: the
    seven days before the current window)."""
    kind, _, value = baseline.partition(":")
    if kind == "dataset" and value:
        return dataset_sample(value)
    if kind == "window" and value:
        span = duration_s(value, "--baseline window")
        return runs.traces(app, now - window_s - span, now - window_s, limit)
    raise InputError(f"cannot read the baseline {baseline!r}",
                     hint="use dataset:PATH (an eval dataset) or window:7d (past traces)")


def compare_samples(runs: DriftRuns, embedder: Embedder, base: Sample, cur: Sample, *,
                    sample: int, alpha: float, seed: int,
                    sides: Sequence[str]) -> list[SideReport]:
    """Each side with enough texts (at least 5 on both) compared; the embedding views use
    a seeded sample of at most `sample` texts per side."""
    out = []
    for side in sides:
        b, c = (base.inputs, cur.inputs) if side == "input" else (base.outputs, cur.outputs)
        if len(b) < 5 or len(c) < 5:
            continue
        b, c = _shuffled(b, seed), _shuffled(c, seed)  # the first `sample` get vectors
        kind = "query" if side == "input" else "passage"
        bv = runs.vectors(embedder, b[:sample], kind)
        cv = runs.vectors(embedder, c[:sample], kind)
        out.append(compare(side, b, c, bv, cv, alpha=alpha, seed=seed))
    return out


def _shuffled(texts: Sequence[str], seed: int) -> list[str]:
    """A seeded pseudo-random order that depends on each text alone, so a sliding window
    that gains or loses a few texts keeps almost the same sample, and a scheduled rerun
    finds its vectors in the memo."""
    return sorted(texts, key=lambda t: hashlib.sha1(f"{seed}\0{t}".encode()).digest())


def _stamp(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(at))


def new_id() -> str:
    return "dr-" + time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
