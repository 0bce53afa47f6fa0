"""The prompt registry: immutable numbered versions, movable labels, diffs, in SQLite.

`name@3` is version 3; `name@production` is whatever the label points at; a bare `name` is
its `production` version, or the newest when nothing is labelled. Saving content that an
existing version already has returns that version (the content hash is the identity), so
re-running a setup script never piles up duplicates. Rolling back is moving a label back;
every move is logged.
"""

from __future__ import annotations

import difflib
import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from alicerce.errors import InputError, NotFoundError
from alicerce.prompts.template import PromptTemplate
from alicerce.store.db import add_columns, connect, transaction
from alicerce.store.labels import Labels
from alicerce.store.labels import schema as labels_schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS prompt_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    hash TEXT NOT NULL,
    template TEXT NOT NULL,
    system TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    PRIMARY KEY (name, version),
    UNIQUE (name, hash)
);
CREATE TABLE IF NOT EXISTS prompt_shipped (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, version)
);
""" + labels_schema("prompt")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class PromptRegistry:
    def __init__(self, path: Path | str, builtins: Iterable[PromptTemplate] = ()) -> None:
        self._db = connect(path, SCHEMA)
        add_columns(self._db, "prompt_label_log", {"actor": "TEXT NOT NULL DEFAULT 'local'"})
        self._labels = Labels(self._db, "prompt")
        for prompt in builtins:
            self._ship(prompt)

    def _ship(self, prompt: PromptTemplate) -> None:
        """Register a shipped prompt. A changed one (a new Alicerce release) becomes a new
        version, and `production` follows it only if it pointed at a shipped version: a
        user's own production choice is never moved."""
        if self._db.execute("SELECT 1 FROM prompt_versions WHERE name=? AND hash=?",
                            (prompt.name, prompt.hash)).fetchone():
            return
        shipped = {int(r[0]) for r in self._db.execute(
            "SELECT version FROM prompt_shipped WHERE name=?", (prompt.name,))}
        production = self._labels.target(prompt.name, "production")
        created = self.create(prompt.name, prompt.template, prompt.system, prompt.description)
        with transaction(self._db) as db:
            db.execute("INSERT INTO prompt_shipped VALUES (?, ?) ON CONFLICT DO NOTHING",
                       (prompt.name, created.version))
        if production is None or production in shipped:
            self.label(created.ref, "production")

    # -- reading -------------------------------------------------------------------------
    def get(self, ref: str) -> PromptTemplate:
        """`name`, `name@VERSION` or `name@LABEL`."""
        name, version = self.resolve(ref)
        row = self._db.execute(
            "SELECT name, version, template, system, description, created_at "
            "FROM prompt_versions WHERE name=? AND version=?", (name, version)).fetchone()
        return self._build(row)

    def resolve(self, ref: str) -> tuple[str, int]:
        """(name, version) that `ref` points at now, without parsing the templates."""
        name, _, at = ref.strip().partition("@")
        version = self._labels.resolve(name, at)
        if version is None:
            raise NotFoundError(f"no prompt {name}@{at}" if at else f"no prompt named {name!r}",
                                hint=self._hint(name))
        return name, version

    def all(self) -> list[PromptTemplate]:
        """The newest version of every prompt."""
        rows = self._db.execute(
            "SELECT name, version, template, system, description, created_at "
            "FROM prompt_versions p WHERE version = "
            "(SELECT MAX(version) FROM prompt_versions q WHERE q.name = p.name) ORDER BY name")
        return [self._build(r) for r in rows]

    def versions(self, name: str) -> list[PromptTemplate]:
        rows = self._db.execute(
            "SELECT name, version, template, system, description, created_at "
            "FROM prompt_versions WHERE name=? ORDER BY version", (name,)).fetchall()
        if not rows:
            raise NotFoundError(f"no prompt named {name!r}", hint=self._hint(name))
        return [self._build(r) for r in rows]

    def history(self, name: str) -> list[tuple[str, int | None, int, str]]:
        """Label moves, oldest first: (label, from, to, when)."""
        return [(r[0], r[1], r[2], r[3]) for r in self._db.execute(
            "SELECT label, old_version, new_version, at FROM prompt_label_log WHERE name=? "
            "ORDER BY rowid", (name,))]

    def diff(self, a: str, b: str) -> str:
        left, right = self.get(a), self.get(b)

        def lines(p: PromptTemplate) -> list[str]:
            head = ["# system\n", *(p.system.splitlines(keepends=True) or ["\n"])]
            return [*head, "# template\n", *p.template.splitlines(keepends=True)]

        out = difflib.unified_diff(lines(left), lines(right), fromfile=left.ref,
                                   tofile=right.ref)
        return "".join(x if x.endswith("\n") else x + "\n" for x in out)

    # -- writing -------------------------------------------------------------------------
    def create(self, name: str, template: str, system: str = "",
               description: str = "") -> PromptTemplate:
        """A new version, or the existing one with the same content."""
        if not _NAME.match(name):
            raise InputError(f"invalid prompt name {name!r}",
                             hint="lower-case letters, digits, '.', '_' or '-' (up to 64)")
        prompt = PromptTemplate(name, template, system, description)  # validates the syntax
        with transaction(self._db) as db:
            row = db.execute("SELECT version FROM prompt_versions WHERE name=? AND hash=?",
                             (name, prompt.hash)).fetchone()
            if row is None:
                version = (self._labels.latest(name) or 0) + 1
                db.execute("INSERT INTO prompt_versions (name, version, hash, template, system, "
                           "description) VALUES (?, ?, ?, ?, ?, ?)",
                           (name, version, prompt.hash, template, system, description))
            else:
                version = int(row[0])
        return self.get(f"{name}@{version}")

    def label(self, ref: str, label: str, actor: str = "local") -> PromptTemplate:
        """Point `label` at the version `ref` names (moving it if it pointed elsewhere)."""
        prompt = self.get(ref)
        with transaction(self._db) as db:
            self._labels.move(db, prompt.name, label, prompt.version, actor)
        return self.get(prompt.ref)

    def close(self) -> None:
        self._db.close()

    # -- helpers -------------------------------------------------------------------------
    def _build(self, row: sqlite3.Row | tuple[object, ...]) -> PromptTemplate:
        name, version = str(row[0]), int(str(row[1]))
        return PromptTemplate(name, str(row[2]), str(row[3]), str(row[4]), version,
                              self._labels.on(name, version), str(row[5]))

    def _hint(self, name: str) -> str:
        names = [p.name for p in self.all()]
        return self._labels.describe(name) or (
            "known prompts: " + (", ".join(names) or "none")
            + "; create one with: alicerce prompts create NAME --file t.j2")
