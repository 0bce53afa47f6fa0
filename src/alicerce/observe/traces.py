"""Traces: every answer stored with what it used, so feedback and audits can point at it.

A trace holds the question, the answer, its citations, the versions (collection, prompt,
model, decoding), timings and token counts, and who asked (the API key id, or "local").
Feedback (thumbs up/down and a comment) attaches to a trace id.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alicerce.errors import InputError, NotFoundError
from alicerce.store.db import connect, transaction
from alicerce.types import Answer

SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    id TEXT PRIMARY KEY,
    at REAL NOT NULL,
    app TEXT NOT NULL,
    caller TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    abstained INTEGER NOT NULL,
    citations TEXT NOT NULL,
    versions TEXT NOT NULL,
    timings TEXT NOT NULL,
    usage TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    trace_id TEXT NOT NULL REFERENCES traces(id),
    at REAL NOT NULL,
    score INTEGER NOT NULL,
    comment TEXT NOT NULL,
    caller TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Trace:
    id: str
    at: float
    app: str
    caller: str
    question: str
    answer: str
    abstained: bool
    citations: list[dict[str, Any]]
    versions: dict[str, Any]
    timings: dict[str, float]
    usage: dict[str, int]


@dataclass(frozen=True)
class Feedback:
    trace_id: str
    at: float
    score: int
    comment: str
    caller: str


class Traces:
    def __init__(self, path: Path) -> None:
        self._db = connect(path, SCHEMA)

    def record(self, app: str, answer: Answer, caller: str = "local") -> str:
        tid = secrets.token_hex(12)
        with transaction(self._db) as db:
            db.execute("INSERT INTO traces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (tid, time.time(), app, caller, answer.question, answer.text,
                        int(answer.abstained),
                        json.dumps([asdict(c) for c in answer.citations], ensure_ascii=False),
                        json.dumps(answer.versions, ensure_ascii=False, default=str),
                        json.dumps(answer.timings), json.dumps(asdict(answer.usage))))
        return tid

    def get(self, trace_id: str) -> Trace:
        row = self._db.execute("SELECT * FROM traces WHERE id=?", (trace_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no trace with id {trace_id!r}",
                                hint="use the trace_id returned with the answer")
        return Trace(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]),
                     json.loads(row[7]), json.loads(row[8]), json.loads(row[9]),
                     json.loads(row[10]))

    def feedback(self, trace_id: str, score: int, comment: str = "",
                 caller: str = "local") -> Feedback:
        """Attach a thumbs up (+1) or down (-1) to an answer; the latest one per caller counts."""
        if score not in (-1, 1):
            raise InputError(f"feedback score must be 1 or -1, got {score}",
                             hint="1 = thumbs up, -1 = thumbs down")
        if len(comment) > 4000:
            raise InputError("the feedback comment is over 4000 characters", hint="shorten it")
        self.get(trace_id)
        fb = Feedback(trace_id, time.time(), score, comment, caller)
        with transaction(self._db) as db:
            db.execute("INSERT INTO feedback (trace_id, at, score, comment, caller) "
                       "VALUES (?, ?, ?, ?, ?)", (trace_id, fb.at, score, comment, caller))
        return fb

    def feedback_for(self, trace_id: str) -> list[Feedback]:
        return [Feedback(*r) for r in self._db.execute(
            "SELECT trace_id, at, score, comment, caller FROM feedback WHERE trace_id=? "
            "ORDER BY seq", (trace_id,))]

    def close(self) -> None:
        self._db.close()
