"""Conversations: turns kept per conversation id in SQLite, follow-ups made standalone.

A conversation belongs to the caller (API key) that started it and to one app: another
caller's id, an id for another app and an unknown id all get the same "not found", so an id
reveals nothing and nobody's history reaches someone else's answer. Ids are made here, never
chosen by a client (`resolve(..., NEW)` starts one).

Retrieval needs a question that stands on its own ("and for interns?" finds nothing), so a
follow-up is rewritten with the `condense-question` prompt from the recent history first.
The history given to that prompt is the newest turns that fit `chat_history_tokens`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from alicerce.errors import NotFoundError
from alicerce.generate.base import Generator
from alicerce.generate.params import DecodingParams
from alicerce.prompts.template import PromptTemplate
from alicerce.store.db import add_columns, add_index, connect, transaction
from alicerce.types import Answer, Message, Usage

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    collection TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);
CREATE TABLE IF NOT EXISTS chat_turns (
    conversation_id TEXT NOT NULL REFERENCES conversations(id),
    seq INTEGER NOT NULL,
    question TEXT NOT NULL,
    standalone TEXT NOT NULL,
    answer TEXT NOT NULL,
    citations TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    PRIMARY KEY (conversation_id, seq)
)
"""


NEW = "new"  # the conversation id that asks for a new conversation


@dataclass(frozen=True)
class Turn:
    seq: int
    question: str
    standalone: str
    answer: str
    trace_id: str
    created_at: str


class Conversations:
    def __init__(self, path: Path | str) -> None:
        self._db = connect(path, SCHEMA)
        # Conversations stored before callers were recorded belong to the local caller.
        add_columns(self._db, "conversations", {"caller": "TEXT NOT NULL DEFAULT 'local'"})
        # Each turn's trace (empty for turns stored before), so a trace finds its session.
        add_columns(self._db, "chat_turns", {"trace_id": "TEXT NOT NULL DEFAULT ''"})
        add_index(self._db, "CREATE INDEX IF NOT EXISTS chat_turns_trace ON chat_turns (trace_id)")

    def resolve(self, collection: str, conversation_id: str | None = None,
                caller: str = "local") -> str:
        """A new id (None or NEW), or `conversation_id` if `caller` started it about
        `collection`; nothing is stored before a turn succeeds."""
        if conversation_id is None or conversation_id == NEW:
            return secrets.token_hex(12)
        row = self._db.execute("SELECT collection, caller FROM conversations WHERE id=?",
                               (conversation_id,)).fetchone()
        if row is None or tuple(row) != (collection, caller):
            shown = conversation_id[:64].encode("ascii", "replace").decode()
            raise NotFoundError(f"no conversation {shown!r} for this caller and app",
                                hint=f"use the conversation_id returned by an earlier turn, "
                                     f"or {NEW!r} to start one")
        return conversation_id

    def history(self, conversation_id: str) -> list[Message]:
        """The turns so far (none for a conversation not stored yet)."""
        out: list[Message] = []
        for question, answer in self._db.execute(
                "SELECT question, answer FROM chat_turns WHERE conversation_id=? ORDER BY seq",
                (conversation_id,)):
            out += [Message("user", question), Message("assistant", answer)]
        return out

    def append(self, conversation_id: str, collection: str, answer: Answer,
               caller: str = "local") -> None:
        with transaction(self._db) as db:
            db.execute("INSERT INTO conversations (id, collection, caller) VALUES (?, ?, ?) "
                       "ON CONFLICT DO NOTHING", (conversation_id, collection, caller))
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM chat_turns "
                             "WHERE conversation_id=?", (conversation_id,)).fetchone()[0]
            db.execute("INSERT INTO chat_turns (conversation_id, seq, question, standalone, "
                       "answer, citations, trace_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (conversation_id, seq, answer.question,
                        answer.standalone_question or answer.question, answer.text,
                        json.dumps([asdict(c) for c in answer.citations]),
                        answer.trace_id or ""))

    def of_trace(self, trace_id: str) -> str | None:
        """The conversation a traced turn belongs to, if any."""
        row = self._db.execute("SELECT conversation_id FROM chat_turns WHERE trace_id=? "
                               "LIMIT 1", (trace_id,)).fetchone()
        return None if row is None or not trace_id else str(row[0])

    def session(self, conversation_id: str) -> tuple[str, str, list[Turn]]:
        """(app, caller, turns in order) of a stored conversation."""
        head = self._db.execute("SELECT collection, caller FROM conversations WHERE id=?",
                                (conversation_id,)).fetchone()
        if head is None:
            raise NotFoundError(f"no conversation {conversation_id[:64]!r}",
                                hint="use the conversation_id an answer returned")
        turns = [Turn(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in self._db.execute(
            "SELECT seq, question, standalone, answer, trace_id, created_at FROM chat_turns "
            "WHERE conversation_id=? ORDER BY seq", (conversation_id,))]
        return str(head[0]), str(head[1]), turns

    def close(self) -> None:
        self._db.close()


def recent(history: Sequence[Message], budget: int,
           count: Callable[[str], int]) -> list[Message]:
    """The newest messages whose tokens fit `budget` (whole turns only)."""
    kept: list[Message] = []
    for i in range(len(history) - 2, -1, -2):
        turn = list(history[i : i + 2])
        cost = sum(count(m.content) + 4 for m in turn)
        if cost > budget:
            break
        kept[:0] = turn
        budget -= cost
    return kept


def condense(generator: Generator, prompt: PromptTemplate, history: Sequence[Message],
             question: str, language: str) -> tuple[str, Usage]:
    """A standalone version of `question`; the question itself when there is no history."""
    if not history:
        return question, Usage()
    params = DecodingParams(max_tokens=96, temperature=0.0)
    done = generator.complete(prompt.render(history=[asdict(m) for m in history],
                                            question=question, language=language), params)
    lines = [ln.strip() for ln in done.text.strip().splitlines() if ln.strip()]
    return (lines[0] if lines else question), done.usage
