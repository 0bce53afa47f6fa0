"""Numbered versions with movable labels, as the prompt and app registries keep them.

Both registries store `{kind}_versions (name, version, ...)`, `{kind}_labels (name, label,
version)` and `{kind}_label_log (name, label, old_version, new_version, actor, at)`. The
queries live here once, so the rules (label names, what a bare name means, logging every
move) are the same for prompts and apps.
"""

from __future__ import annotations

import re

from alicerce.errors import InputError
from alicerce.store.db import Sql

LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def schema(kind: str) -> str:
    """The label tables of `{kind}_versions` (which the registry creates first)."""
    return f"""
CREATE TABLE IF NOT EXISTS {kind}_labels (
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, label),
    FOREIGN KEY (name, version) REFERENCES {kind}_versions (name, version)
);
CREATE TABLE IF NOT EXISTS {kind}_label_log (  -- rowid: history reads in insertion order
    name TEXT NOT NULL,
    label TEXT NOT NULL,
    old_version INTEGER,
    new_version INTEGER NOT NULL,
    actor TEXT NOT NULL DEFAULT 'local',
    at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)"""


class Labels:
    def __init__(self, db: Sql, kind: str) -> None:
        self._db = db
        self._versions, self._labels, self._log = (f"{kind}_versions", f"{kind}_labels",
                                                   f"{kind}_label_log")

    def latest(self, name: str) -> int | None:
        row = self._db.execute(f"SELECT MAX(version) FROM {self._versions} WHERE name=?",
                               (name,)).fetchone()
        return None if row[0] is None else int(row[0])

    def target(self, name: str, label: str) -> int | None:
        row = self._db.execute(f"SELECT version FROM {self._labels} WHERE name=? AND label=?",
                               (name, label)).fetchone()
        return None if row is None else int(row[0])

    def on(self, name: str, version: int) -> tuple[str, ...]:
        """The labels pointing at one version."""
        return tuple(r[0] for r in self._db.execute(
            f"SELECT label FROM {self._labels} WHERE name=? AND version=? ORDER BY label",
            (name, version)))

    def resolve(self, name: str, at: str) -> int | None:
        """The version `at` names: digits, a label, or '' (production, else the newest);
        None when there is no such version."""
        if at.isdigit():
            version: int | None = int(at) if len(at) <= 18 else None  # beyond SQLite INTEGER
        else:
            version = self.target(name, at or "production")
            if version is None and not at:
                version = self.latest(name)
        if version is None or self._db.execute(
                f"SELECT 1 FROM {self._versions} WHERE name=? AND version=?",
                (name, version)).fetchone() is None:
            return None
        return version

    def move(self, db: Sql, name: str, label: str, version: int,
             actor: str) -> int | None:
        """Point `label` at `version` inside the caller's transaction and log the move;
        returns the version it left."""
        if not LABEL.match(label):
            raise InputError(f"invalid label {label!r}",
                             hint="start with a letter: production, staging, canary-2, ...")
        old = self.target(name, label)
        db.execute(f"INSERT INTO {self._labels} (name, label, version) VALUES (?, ?, ?) "
                   "ON CONFLICT (name, label) DO UPDATE SET version=excluded.version",
                   (name, label, version))
        db.execute(f"INSERT INTO {self._log} (name, label, old_version, new_version, actor) "
                   "VALUES (?, ?, ?, ?, ?)", (name, label, old, version, actor))
        return old

    def earlier(self, name: str, label: str, current: int) -> int | None:
        """The newest version older than `current` that `label` ever pointed at: where a
        rollback goes."""
        row = self._db.execute(f"SELECT MAX(new_version) FROM {self._log} WHERE name=? AND "
                               "label=? AND new_version < ?", (name, label, current)).fetchone()
        return None if row[0] is None else int(row[0])

    def describe(self, name: str) -> str | None:
        """'NAME has versions 1..N and labels ...' for error hints; None if no versions."""
        latest = self.latest(name)
        if latest is None:
            return None
        labels = [r[0] for r in self._db.execute(
            f"SELECT label FROM {self._labels} WHERE name=? ORDER BY label", (name,))]
        return (f"{name} has versions 1..{latest}"
                + (f" and labels {', '.join(labels)}" if labels else ""))
