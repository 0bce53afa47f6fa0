"""Conversations: turns kept per conversation id in SQLite, follow-ups made standalone.

Retrieval needs a question that stands on its own ("and for interns?" finds nothing), so a
follow-up is rewritten with the `condense-question` prompt from the recent history first.
The history given to that prompt is the newest turns that fit `chat_history_tokens`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from alicerce.errors import InputError
from alicerce.generate.base import Generator
from alicerce.generate.params import DecodingParams
from alicerce.prompts.template import PromptTemplate
from alicerce.store.db import connect, transaction
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


class Conversations:
    def __init__(self, path: Path) -> None:
        self._db = connect(path, SCHEMA)

    def resolve(self, collection: str, conversation_id: str | None = None) -> str:
        """A new id, or `conversation_id` checked; nothing is stored before a turn succeeds."""
        cid = conversation_id or secrets.token_hex(8)
        if not 1 <= len(cid) <= 64 or not cid.replace("-", "").replace("_", "").isalnum():
            raise InputError(f"invalid conversation id {cid!r}",
                             hint="letters, digits, '-' or '_' (up to 64)")
        row = self._db.execute("SELECT collection FROM conversations WHERE id=?",
                               (cid,)).fetchone()
        if row is not None and row[0] != collection:
            raise InputError(f"conversation {cid} is about collection {row[0]!r}",
                             hint="start a new conversation for another collection")
        return cid

    def history(self, conversation_id: str) -> list[Message]:
        """The turns so far (none for a conversation not stored yet)."""
        out: list[Message] = []
        for question, answer in self._db.execute(
                "SELECT question, answer FROM chat_turns WHERE conversation_id=? ORDER BY seq",
                (conversation_id,)):
            out += [Message("user", question), Message("assistant", answer)]
        return out

    def append(self, conversation_id: str, collection: str, answer: Answer) -> None:
        with transaction(self._db) as db:
            db.execute("INSERT OR IGNORE INTO conversations (id, collection) VALUES (?, ?)",
                       (conversation_id, collection))
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM chat_turns "
                             "WHERE conversation_id=?", (conversation_id,)).fetchone()[0]
            db.execute("INSERT INTO chat_turns (conversation_id, seq, question, standalone, "
                       "answer, citations) VALUES (?, ?, ?, ?, ?, ?)",
                       (conversation_id, seq, answer.question,
                        answer.standalone_question or answer.question, answer.text,
                        json.dumps([asdict(c) for c in answer.citations])))

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
