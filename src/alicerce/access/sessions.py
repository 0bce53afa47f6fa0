"""Console sessions: a sign-in with an API key becomes a random token whose sha256, key id,
CSRF token, language and expiry live in the home's database (so replicas share them, and a
sign-out or expiry ends them everywhere)."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alicerce.access.keys import ApiKey
from alicerce.store.db import connect, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS console_sessions (
    id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    csrf TEXT NOT NULL,
    lang TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
)
"""
TTL_S = 12 * 3600.0
PER_KEY = 20  # sessions one key may hold: signing in again drops the oldest
Lang = Literal["en", "pt"]


@dataclass(frozen=True)
class Session:
    key: ApiKey
    csrf: str
    lang: Lang


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    def __init__(self, path: Path | str) -> None:
        self._db = connect(path, SCHEMA)

    def create(self, key_id: str, lang: Lang) -> str:
        """A new session's token (the cookie's value); expired ones and a key's oldest
        beyond PER_KEY go, so sign-ins never grow the table without bound."""
        token, now = secrets.token_urlsafe(32), time.time()
        with transaction(self._db) as db:
            db.execute("DELETE FROM console_sessions WHERE expires_at < ?", (now,))
            db.execute("DELETE FROM console_sessions WHERE key_id = ? AND id NOT IN (SELECT id "
                       "FROM console_sessions WHERE key_id = ? ORDER BY created_at DESC "
                       "LIMIT ?)", (key_id, key_id, PER_KEY - 1))
            db.execute("INSERT INTO console_sessions VALUES (?, ?, ?, ?, ?, ?)",
                       (_digest(token), key_id, secrets.token_urlsafe(24), lang, now,
                        now + TTL_S))
        return token

    def find(self, token: str) -> tuple[str, str, Lang] | None:
        """(key id, CSRF token, language) of a live session."""
        row = self._db.execute("SELECT key_id, csrf, lang FROM console_sessions WHERE id = ? "
                               "AND expires_at >= ?", (_digest(token[:100]), time.time())
                               ).fetchone()
        return None if row is None else (row[0], row[1], "pt" if row[2] == "pt" else "en")

    def set_lang(self, token: str, lang: Lang) -> None:
        with transaction(self._db) as db:
            db.execute("UPDATE console_sessions SET lang = ? WHERE id = ?",
                       (lang, _digest(token[:100])))

    def end(self, token: str) -> None:
        with transaction(self._db) as db:
            db.execute("DELETE FROM console_sessions WHERE id = ?", (_digest(token[:100]),))

    def close(self) -> None:
        self._db.close()
