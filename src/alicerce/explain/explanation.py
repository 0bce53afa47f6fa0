"""What an explanation of a traced answer says, and where explanations are kept.

Kept per (trace, budget, seed) in the home's database, so asking "why this answer?" twice
costs the model calls once; an explanation belongs to its trace, and whoever may read the
trace may read it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alicerce.store.db import connect, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS explanations (
    trace_id TEXT NOT NULL,
    budget INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    at REAL NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (trace_id, budget, seed)
)
"""
RELIED_NATS = 1.0  # a source is relied on when the answer is e times less likely without it


@dataclass(frozen=True)
class SourceWeight:
    n: int
    title: str
    doc_key: str
    chunk_id: int
    cited: bool
    drop: float  # the answer's log-likelihood lost without this source, in nats
    relied: bool
    gone: bool  # its chunk is no longer in the collection (the recorded text was used)


@dataclass(frozen=True)
class SentenceWeight:
    source: int
    text: str
    score: float  # how much keeping the sentence raises the answer's log-likelihood, nats


@dataclass(frozen=True)
class Explanation:
    trace_id: str
    at: float
    question: str
    answer: str  # the model's output, as scored
    model: str
    model_identity: str
    method: str  # "leave-one-out" or "lasso"
    budget: int
    calls: int
    seconds: float
    full_logprob: float
    empty_logprob: float
    fit_r2: float | None
    sources: tuple[SourceWeight, ...]
    sentences: tuple[SentenceWeight, ...]  # strongest first
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Explanation:
        return cls(**{**d, "sources": tuple(SourceWeight(**s) for s in d["sources"]),
                      "sentences": tuple(SentenceWeight(**s) for s in d["sentences"]),
                      "notes": tuple(d.get("notes", ()))})

    @property
    def unrelied(self) -> list[SourceWeight]:
        """Sources the answer cites but does not rest on."""
        return [s for s in self.sources if s.cited and not s.relied]


class Explanations:
    def __init__(self, path: Path | str) -> None:
        self._db = connect(path, SCHEMA)

    def get(self, trace_id: str, budget: int, seed: int) -> Explanation | None:
        row = self._db.execute("SELECT body FROM explanations WHERE trace_id=? AND budget=? "
                               "AND seed=?", (trace_id, budget, seed)).fetchone()
        return Explanation.from_dict(json.loads(row[0])) if row else None

    def latest(self, trace_id: str) -> Explanation | None:
        row = self._db.execute("SELECT body FROM explanations WHERE trace_id=? ORDER BY at "
                               "DESC LIMIT 1", (trace_id,)).fetchone()
        return Explanation.from_dict(json.loads(row[0])) if row else None

    def put(self, e: Explanation, seed: int) -> None:
        with transaction(self._db) as db:
            db.execute("INSERT INTO explanations VALUES (?, ?, ?, ?, ?) ON CONFLICT "
                       "(trace_id, budget, seed) DO UPDATE SET at = excluded.at, "
                       "body = excluded.body", (e.trace_id, e.budget, seed, time.time(),
                                                json.dumps(e.as_dict(), ensure_ascii=False)))

    def close(self) -> None:
        self._db.close()
