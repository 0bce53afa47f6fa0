"""Leases: one holder at a time for work that replicas must not all do (scheduled
monitoring). A lease is a row naming its holder until a time; a replica takes it when it is
free or expired, and renews it while it holds it, so the work moves to another replica
only when the holder stops renewing (it died or was stopped)."""

from __future__ import annotations

import os
import secrets
import socket
import time
from pathlib import Path

from alicerce.store.db import connect, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until REAL NOT NULL
)
"""


class Leases:
    def __init__(self, target: Path | str) -> None:
        self._db = connect(target, SCHEMA)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"

    def take(self, name: str, seconds: float) -> bool:
        """Hold `name` for `seconds` from now if it is free, expired or already ours."""
        now = time.time()
        with transaction(self._db) as db:
            row = db.execute(
                "INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                "SET holder = excluded.holder, until = excluded.until "
                "WHERE leases.until < ? OR leases.holder = excluded.holder RETURNING holder",
                (name, self.holder, now + seconds, now)).fetchone()
        return row is not None and row[0] == self.holder

    def close(self) -> None:
        self._db.close()
