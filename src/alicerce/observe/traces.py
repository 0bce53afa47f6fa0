"""Traces: every request stored with its steps and lineage, so any answer can be explained
after the fact; feedback attaches to them and exports into evaluation datasets.

A trace holds the question, the answer and citations, the spans (each step's inputs,
outputs and timing), the lineage (app version, collection version with its embedder and
chunking, prompt version, model file hash, decoding parameters, software version), who
asked, and the error if the request failed.

Writes happen on a background thread with its own connection, batched, so a request pays
for putting a tuple on a queue (microseconds), not for a SQLite commit; `flush()` waits for
them, and every read flushes first so a trace id is readable as soon as it is returned. A
write that fails is logged and counted and never fails the request. Spans are stored as
zlib-compressed JSON: the rendered prompt is most of a trace's size.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alicerce.errors import InputError, NotFoundError
from alicerce.observe.otlp import OtlpExport
from alicerce.observe.trace_records import (
    COLUMNS,
    FEEDBACK_COLUMNS,
    INDEXES,
    REDACTED,
    SCHEMA,
    TRACE_COLUMNS,
    Feedback,
    FeedbackFilter,
    Trace,
    TraceSettings,
    redact_span,
    trace_from_row,
)
from alicerce.store.db import Sql, add_columns, connect, transaction
from alicerce.types import Answer

log = logging.getLogger("alicerce.traces")

@dataclass
class _Pending:
    id: str
    at: float
    app: str
    app_version: int | None
    caller: str
    question: str
    answer: Answer | dict[str, Any] | None  # a dict: a cached answer, as the server sends it
    lineage: dict[str, Any]
    spans: list[dict[str, Any]]
    error: str
    latency_ms: float
    origin: str = "live"


class Traces:
    PRUNE_EVERY = 10_000  # writes between retention passes

    def __init__(self, path: Path | str, settings: TraceSettings | None = None,
                 export: OtlpExport | None = None) -> None:
        self.settings = settings or TraceSettings()
        self.export_to = export  # OTLP, after each write (docs/apps.md)
        self._path = path
        self._db = connect(path, SCHEMA)
        add_columns(self._db, "traces", TRACE_COLUMNS)
        add_columns(self._db, "feedback", FEEDBACK_COLUMNS)
        with transaction(self._db) as db:
            for statement in INDEXES.split(";"):
                db.execute(statement)
        self._queue: queue.Queue[_Pending | None] = queue.Queue(self.settings.queue_size)
        self._writer: threading.Thread | None = None
        self._start = threading.Lock()
        self._since_prune = 0
        self.failed = 0  # traces lost to write errors or a full queue
        self.on_failure: Callable[[int], None] | None = None

    # -- writing -------------------------------------------------------------------------
    def record(self, app: str, caller: str, question: str, *,
               answer: Answer | dict[str, Any] | None = None,
               error: str = "", spans: list[dict[str, Any]] | None = None,
               lineage: dict[str, Any] | None = None, app_version: int | None = None,
               latency_ms: float = 0.0, at: float | None = None,
               origin: str = "live") -> str:
        """Queue a trace and return its id; never raises (a lost trace is counted). `at`
        backdates it (imports of past traffic, benchmarks); default now. `origin` tells
        batch work from live traffic."""
        tid = secrets.token_hex(12)
        item = _Pending(tid, time.time() if at is None else at, app, app_version, caller,
                        question, answer, lineage or {}, spans or [], error, latency_ms,
                        origin)
        try:
            self._ensure_writer()
            self._queue.put_nowait(item)
        except (queue.Full, RuntimeError) as exc:
            self._lost(1, f"trace queue full or writer down: {exc}")
        return tid

    def flush(self) -> None:
        """Wait until every queued trace is written (or counted as lost)."""
        if self._writer is not None:
            self._queue.join()

    def prune(self, keep_days: float | None = None, keep_count: int | None = None) -> int:
        """Delete traces older than `keep_days` or beyond the newest `keep_count`, with their
        feedback; returns how many went."""
        self.flush()
        days = self.settings.keep_days if keep_days is None else keep_days
        count = self.settings.keep_count if keep_count is None else keep_count
        if days < 0 or count < 0:
            raise InputError("retention must be zero or more", hint="e.g. --days 30")
        with transaction(self._db) as db:
            return _prune(db, days, count)

    def _ensure_writer(self) -> None:
        if self._writer is not None and self._writer.is_alive():
            return
        with self._start:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                                name="alicerce-traces")
                self._writer.start()

    def _write_loop(self) -> None:
        db = connect(self._path)
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    self._queue.task_done()
                    return
                batch = [first]
                while len(batch) < 256:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        self._queue.put(None)  # seen after this batch
                        self._queue.task_done()
                        break
                    batch.append(nxt)
                try:
                    self._write(db, batch)
                finally:
                    for _ in batch:
                        self._queue.task_done()
        finally:
            db.close()

    def _write(self, db: Sql, batch: list[_Pending]) -> None:
        rows, written = [], []
        for p in batch:
            try:
                rows.append(self._row(p))
                written.append(p)
            except (KeyError, TypeError, ValueError) as exc:  # one bad trace, not the batch
                self._lost(1, f"trace {p.id} not serialisable: {exc!r}")
        try:
            self._insert(db, rows)
        except Exception as exc:  # logged and counted: tracing never fails a request
            self._lost(len(rows), f"trace write failed: {exc}")
            return
        if self.export_to is not None:
            for p, row in zip(written, rows, strict=True):
                try:
                    self.export_to.export(self._exported(p, row))
                except Exception as exc:  # the SQLite copy is kept; only the export is lost
                    log.error("trace %s not exported over OTLP: %s", p.id, exc)

    def _insert(self, db: Sql, rows: list[tuple[Any, ...]]) -> None:
        with transaction(db):
            db.executemany(
                "INSERT INTO traces (id, at, app, caller, question, answer, abstained, "
                "citations, versions, timings, usage, app_version, status, error, latency_ms, "
                "spans, redacted, origin) VALUES (" + ", ".join("?" * 18) + ")",
                rows)
            self._since_prune += len(rows)
            if self._since_prune >= self.PRUNE_EVERY:
                _prune(db, self.settings.keep_days, self.settings.keep_count)
                self._since_prune = 0

    def _row(self, p: _Pending) -> tuple[Any, ...]:
        redact = self.settings.redact
        spans = [redact_span(s) for s in p.spans] if redact else p.spans
        if isinstance(p.answer, Answer):
            a = p.answer
            text, abstained, timings = a.text, a.abstained, a.timings
            cites, usage = [asdict(c) for c in a.citations], asdict(a.usage)
        elif p.answer is not None:
            d = p.answer  # a cached answer's wire body
            text, abstained = str(d.get("answer", "")), bool(d.get("abstained", False))
            timings, cites, usage = {}, list(d.get("citations", [])), {}
        else:
            text, abstained, timings, cites, usage = "", False, {}, [], {}
        return (p.id, p.at, p.app, p.caller, REDACTED if redact else p.question,
                REDACTED if redact and text else text, int(abstained), _json(cites),
                _json(p.lineage), _json(timings), _json(usage), p.app_version,
                "error" if p.error else "ok", p.error, round(p.latency_ms, 3),
                zlib.compress(_json(spans).encode(), 1), int(redact), p.origin)

    def _exported(self, p: _Pending, row: tuple[Any, ...]) -> dict[str, Any]:
        """The trace as OTLP sends it: the stored (possibly redacted) texts and spans."""
        spans = [redact_span(s) for s in p.spans] if self.settings.redact else p.spans
        return {"id": p.id, "at": p.at, "app": p.app, "app_version": p.app_version,
                "caller": p.caller, "question": row[4], "answer": row[5], "status": row[12],
                "error": p.error, "latency_ms": p.latency_ms, "lineage": p.lineage,
                "spans": spans}

    def _lost(self, n: int, why: str) -> None:
        self.failed += n
        log.error("%d trace(s) not stored: %s", n, why)
        if self.on_failure is not None:
            self.on_failure(n)

    # -- reading -------------------------------------------------------------------------
    def get(self, trace_id: str) -> Trace:
        self.flush()
        row = self._db.execute(f"SELECT {COLUMNS} FROM traces WHERE id=?",
                               (trace_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no trace with id {trace_id!r}",
                                hint="use the trace_id returned with the answer, or "
                                     "`alicerce traces list`")
        return trace_from_row(row)

    def find(self, *, app: str | None = None, since_s: float | None = None,
             feedback: FeedbackFilter = "any", status: str | None = None,
             caller: str | None = None, app_version: int | None = None,
             before: float | None = None, limit: int = 50) -> list[Trace]:
        """Newest first, older than `before` when given (the next page's cursor).
        `feedback`: up / down (a thumbs given), none (no feedback), any."""
        if not 1 <= limit <= 10_000:
            raise InputError(f"limit must be 1..10000, got {limit}", hint="e.g. --limit 50")
        self.flush()
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("app", app), ("status", status), ("caller", caller),
                              ("app_version", app_version)):
            if value is not None:
                where.append(f"t.{column} = ?")
                args.append(value)
        if since_s is not None:
            where.append("t.at >= ?")
            args.append(time.time() - since_s)
        if before is not None:
            where.append("t.at < ?")
            args.append(before)
        join = ""
        if feedback in ("up", "down"):
            join = ("JOIN (SELECT DISTINCT trace_id FROM feedback WHERE score = ?) f "
                    "ON f.trace_id = t.id")
            args.insert(0, 1 if feedback == "up" else -1)
        elif feedback == "none":
            where.append("NOT EXISTS (SELECT 1 FROM feedback f WHERE f.trace_id = t.id)")
        elif feedback != "any":
            raise InputError(f"unknown feedback filter {feedback!r}",
                             hint="use up, down, none or any")
        sql = (f"SELECT {COLUMNS.replace('id,', 't.id,', 1)} FROM traces t {join} "
               + (f"WHERE {' AND '.join(where)} " if where else "")
               + "ORDER BY t.at DESC LIMIT ?")
        return [trace_from_row(r) for r in self._db.execute(sql, (*args, limit))]

    def count(self) -> int:
        self.flush()
        return int(self._db.execute("SELECT COUNT(*) FROM traces").fetchone()[0])

    # -- feedback ------------------------------------------------------------------------
    def feedback(self, trace_id: str, score: int = 0, comment: str = "",
                 caller: str = "local", rating: int | None = None,
                 reference: str = "") -> Feedback:
        """Thumbs (+1/-1), a 1-5 rating, a comment and/or the right answer, on one trace."""
        if score not in (-1, 0, 1):
            raise InputError(f"feedback score must be 1 or -1, got {score}",
                             hint="1 = thumbs up, -1 = thumbs down")
        if rating is not None and not 1 <= rating <= 5:
            raise InputError(f"rating must be 1 to 5, got {rating}", hint="5 = best")
        if not (score or rating or comment.strip() or reference.strip()):
            raise InputError("the feedback is empty",
                             hint="give a thumbs (score 1 or -1), a rating, or a comment")
        if len(comment) > 4000 or len(reference) > 20000:
            raise InputError("the comment (4000) or reference answer (20000 characters) is "
                             "too long", hint="shorten it")
        self.get(trace_id)
        fb = Feedback(trace_id, time.time(), score, comment, caller, rating, reference)
        with transaction(self._db) as db:
            db.execute("INSERT INTO feedback (trace_id, at, score, comment, caller, rating, "
                       "reference) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (trace_id, fb.at, score, comment, caller, rating, reference))
        return fb

    def feedback_for(self, trace_id: str) -> list[Feedback]:
        return [Feedback(*r) for r in self._db.execute(
            "SELECT trace_id, at, score, comment, caller, rating, reference FROM feedback "
            "WHERE trace_id=? ORDER BY seq", (trace_id,))]

    def abstentions(self, app: str, app_version: int | None,
                    exclude: Sequence[str] = ()) -> tuple[int, int]:
        """(live answers, abstentions) of one app version, leaving out the `exclude`
        callers (evaluation, red team): an app card's known limit."""
        self.flush()
        skip = f"AND caller NOT IN ({', '.join('?' * len(exclude))}) " if exclude else ""
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(abstained), 0) FROM traces "
                               "WHERE app = ? AND COALESCE(app_version, -1) = ? "
                               "AND origin = 'live' AND status = 'ok' " + skip,
                               (app, -1 if app_version is None else app_version,
                                *exclude)).fetchone()
        return int(row[0]), int(row[1])

    def summary(self, app: str) -> list[dict[str, Any]]:
        """Feedback per app version: traces, thumbs up/down, mean rating, errors."""
        self.flush()
        rows = self._db.execute(
            "SELECT t.app_version, COUNT(DISTINCT t.id), "
            "COUNT(DISTINCT CASE WHEN f.score = 1 THEN t.id END), "
            "COUNT(DISTINCT CASE WHEN f.score = -1 THEN t.id END), AVG(f.rating), "
            "COUNT(DISTINCT CASE WHEN t.status = 'error' THEN t.id END), "
            "AVG(t.latency_ms) "
            "FROM traces t LEFT JOIN feedback f ON f.trace_id = t.id WHERE t.app = ? "
            "GROUP BY t.app_version ORDER BY t.app_version", (app,))
        return [{"app_version": r[0], "traces": r[1], "up": r[2], "down": r[3],
                 "mean_rating": None if r[4] is None else round(r[4], 2), "errors": r[5],
                 "mean_latency_ms": None if r[6] is None else round(r[6], 1)} for r in rows]

    def export(self, *, app: str | None = None, rating: FeedbackFilter = "any",
               min_stars: int | None = None, max_stars: int | None = None
               ) -> Iterator[dict[str, Any]]:
        """Traces that have feedback, as evaluation rows (question, answer, sources,
        reference) with `origin` saying which trace and feedback each came from."""
        self.flush()
        where: list[str] = ["1=1"]
        args: list[Any] = []
        if app is not None:
            where.append("t.app = ?")
            args.append(app)
        if rating in ("up", "down"):
            where.append("f.score = ?")
            args.append(1 if rating == "up" else -1)
        elif rating != "any":
            raise InputError(f"unknown rating filter {rating!r}", hint="use up, down or any")
        if min_stars is not None:
            where.append("f.rating >= ?")
            args.append(min_stars)
        if max_stars is not None:
            where.append("f.rating <= ?")
            args.append(max_stars)
        sql = (f"SELECT t.id, t.app, t.app_version, t.question, t.answer, t.citations, "
               f"t.versions, f.score, f.rating, f.comment, f.reference, f.caller, f.at "
               f"FROM feedback f JOIN traces t ON t.id = f.trace_id "
               f"WHERE {' AND '.join(where)} ORDER BY f.seq")
        for r in self._db.execute(sql, args):
            cites = json.loads(r[5])
            yield {"question": r[3], "answer": r[4], "reference_answer": r[10] or None,
                   "sources": [{"doc_key": c["doc_key"], "title": c["title"],
                                "chunk_id": c["chunk_id"]} for c in cites],
                   "origin": {"trace_id": r[0], "app": r[1], "app_version": r[2],
                              "feedback": {"score": r[7], "rating": r[8], "comment": r[9],
                                           "by": r[11], "at": r[12]},
                              "lineage": json.loads(r[6])}}

    def close(self) -> None:
        if self._writer is not None and self._writer.is_alive():
            self._queue.put(None)
            self._writer.join()
        if self.export_to is not None:
            self.export_to.close()  # sends what the batching exporter still holds
        self._db.close()


def _prune(db: Sql, days: float, count: int) -> int:
    """0 days or 0 count means no limit of that kind."""
    cutoff = time.time() - days * 86400 if days > 0 else 0.0
    if count > 0:
        row = db.execute("SELECT at FROM traces ORDER BY at DESC LIMIT 1 OFFSET ?",
                         (count,)).fetchone()
        cutoff = max(cutoff, row[0] + 1e-6) if row else cutoff
    if not cutoff:
        return 0
    db.execute("DELETE FROM feedback WHERE trace_id IN (SELECT id FROM traces WHERE at < ?)",
               (cutoff,))
    return db.execute("DELETE FROM traces WHERE at < ?", (cutoff,)).rowcount


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
