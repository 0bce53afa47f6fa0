"""What a trace is as stored: the tables and their columns, the Trace and Feedback records,
how a row reads back, and which span attributes hold user text (dropped when redaction is
on). The store that writes and queries them is observe/traces.py."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any, Literal

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
# Columns added after the first release; existing homes get them on open.
TRACE_COLUMNS = {"app_version": "INTEGER", "status": "TEXT NOT NULL DEFAULT 'ok'",
                 "error": "TEXT NOT NULL DEFAULT ''", "latency_ms": "REAL",
                 "spans": "BLOB", "redacted": "INTEGER NOT NULL DEFAULT 0",
                 # "live" traffic, or "batch:<job id>": monitoring reads live traffic only
                 "origin": "TEXT NOT NULL DEFAULT 'live'"}
FEEDBACK_COLUMNS = {"rating": "INTEGER", "reference": "TEXT NOT NULL DEFAULT ''"}
INDEXES = """
CREATE INDEX IF NOT EXISTS traces_app_at ON traces (app, at);
CREATE INDEX IF NOT EXISTS traces_at ON traces (at);
CREATE INDEX IF NOT EXISTS traces_caller_at ON traces (caller, at);
CREATE INDEX IF NOT EXISTS feedback_trace ON feedback (trace_id);
CREATE INDEX IF NOT EXISTS feedback_score ON feedback (score, trace_id)
"""
# Span attributes that hold user text; dropped when redaction is on.
TEXT_ATTRS = frozenset({"query", "question", "messages", "output", "raw", "text", "history",
                        "answer", "input", "inputs", "outputs", "invalid", "candidates",
                        "thought", "args", "observation"})
REDACTED = "[redacted]"
FeedbackFilter = Literal["up", "down", "any", "none"]


@dataclass(frozen=True)
class Trace:
    id: str
    at: float
    app: str
    app_version: int | None
    caller: str
    question: str
    answer: str
    abstained: bool
    citations: list[dict[str, Any]]
    lineage: dict[str, Any]
    timings: dict[str, float]
    usage: dict[str, int]
    status: str
    error: str
    latency_ms: float | None
    spans: list[dict[str, Any]]
    redacted: bool
    origin: str = "live"


@dataclass(frozen=True)
class Feedback:
    trace_id: str
    at: float
    score: int  # +1 thumbs up, -1 down, 0 none given
    comment: str
    caller: str
    rating: int | None = None  # 1..5
    reference: str = ""  # the answer the user says was right


@dataclass(frozen=True)
class TraceSettings:
    redact: bool = False
    keep_days: float = 30.0
    keep_count: int = 1_000_000
    queue_size: int = 10_000


COLUMNS = ("id, at, app, app_version, caller, question, answer, abstained, citations, "
            "versions, timings, usage, status, error, latency_ms, spans, redacted, origin")


def trace_from_row(row: tuple[Any, ...]) -> Trace:
    spans = json.loads(zlib.decompress(row[15])) if row[15] else []
    return Trace(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]),
                 json.loads(row[8]), json.loads(row[9]), json.loads(row[10]),
                 json.loads(row[11]), row[12], row[13], row[14], spans, bool(row[16]),
                 row[17])


def redact_span(span: dict[str, Any]) -> dict[str, Any]:
    attrs = {k: (REDACTED if k in TEXT_ATTRS else v) for k, v in span["attrs"].items()}
    return {**span, "attrs": attrs}
