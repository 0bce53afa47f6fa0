"""The app registry: immutable numbered versions of resolved app specs, movable labels,
rollback and diffs, in SQLite.

A version's identity is the hash of its resolved spec (prompt pinned to a version, model to
its file hash, every retrieval and decoding default filled in), so deploying the same YAML
twice gives the same version, and deploying it after the prompt's label moved gives a new
one. `name`, `name@N`, `name@label` and `name:label` all name a version; a bare name is the
`production` version. The first deploy of a name is labelled `production`; later deploys are
served only once a label is moved to them.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alicerce.errors import InputError, NotFoundError
from alicerce.refs import split_ref
from alicerce.store.db import connect, transaction
from alicerce.store.labels import Labels
from alicerce.store.labels import schema as labels_schema

SCHEMA = """
CREATE TABLE IF NOT EXISTS app_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    hash TEXT NOT NULL,
    spec TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now')),
    created_by TEXT NOT NULL,
    PRIMARY KEY (name, version),
    UNIQUE (name, hash)
);
""" + labels_schema("app")


@dataclass(frozen=True)
class AppVersion:
    name: str
    version: int
    hash: str
    spec: dict[str, Any]  # resolved: every reference pinned, every default filled
    source: str  # the YAML as the user wrote it
    created_at: str
    created_by: str
    labels: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def spec_hash(spec: dict[str, Any]) -> str:
    canonical = json.dumps(spec, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class AppRegistry:
    def __init__(self, path: Path | str) -> None:
        self._db = connect(path, SCHEMA)
        self._labels = Labels(self._db, "app")

    # -- reading -------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return self._labels.latest(name) is not None

    def resolve(self, ref: str) -> tuple[str, int]:
        """(name, version) that `ref` points at now: one indexed lookup, cheap per request."""
        name, at = split_ref(ref)
        version = self._labels.resolve(name, at)
        if version is None:
            raise NotFoundError(f"no app {name}@{at}" if at else f"no app named {name!r}",
                                hint=self._hint(name))
        return name, version

    def get(self, ref: str) -> AppVersion:
        name, version = self.resolve(ref)
        row = self._db.execute(
            "SELECT name, version, hash, spec, source, created_at, created_by "
            "FROM app_versions WHERE name=? AND version=?", (name, version)).fetchone()
        return self._build(row)

    def all(self) -> list[AppVersion]:
        """The newest version of every app."""
        rows = self._db.execute(
            "SELECT name, version, hash, spec, source, created_at, created_by "
            "FROM app_versions a WHERE version = "
            "(SELECT MAX(version) FROM app_versions b WHERE b.name = a.name) ORDER BY name")
        return [self._build(r) for r in rows]

    def names(self) -> list[str]:
        return [str(r[0]) for r in self._db.execute("SELECT DISTINCT name FROM app_versions")]

    def versions(self, name: str) -> list[AppVersion]:
        rows = self._db.execute(
            "SELECT name, version, hash, spec, source, created_at, created_by "
            "FROM app_versions WHERE name=? ORDER BY version", (name,)).fetchall()
        if not rows:
            raise NotFoundError(f"no app named {name!r}", hint=self._hint(name))
        return [self._build(r) for r in rows]

    def history(self, name: str) -> list[dict[str, Any]]:
        """Label moves, oldest first."""
        return [{"label": r[0], "from": r[1], "to": r[2], "by": r[3], "at": r[4]}
                for r in self._db.execute(
                    "SELECT label, old_version, new_version, actor, at FROM app_label_log "
                    "WHERE name=? ORDER BY rowid", (name,))]

    def diff(self, a: str, b: str) -> str:
        left, right = self.get(a), self.get(b)

        def lines(v: AppVersion) -> list[str]:
            text = yaml.safe_dump(v.spec, sort_keys=True, allow_unicode=True)
            return text.splitlines(keepends=True)

        return "".join(difflib.unified_diff(lines(left), lines(right), fromfile=left.ref,
                                            tofile=right.ref))

    # -- writing -------------------------------------------------------------------------
    def deploy(self, spec: dict[str, Any], source: str, actor: str) -> tuple[AppVersion, bool]:
        """Store a resolved spec: (its version, whether it is new). Same spec, same version."""
        name, digest = str(spec["name"]), spec_hash(spec)
        with transaction(self._db) as db:
            row = db.execute("SELECT version FROM app_versions WHERE name=? AND hash=?",
                             (name, digest)).fetchone()
            created = row is None
            if created:
                version = (self._labels.latest(name) or 0) + 1
                db.execute("INSERT INTO app_versions (name, version, hash, spec, source, "
                           "created_by) VALUES (?, ?, ?, ?, ?, ?)",
                           (name, version, digest, json.dumps(spec, ensure_ascii=False),
                            source, actor))
                if self._labels.target(name, "production") is None:
                    self._labels.move(db, name, "production", version, actor)
            else:
                version = int(row[0])
        return self.get(f"{name}@{version}"), created

    def label(self, ref: str, label: str, actor: str) -> tuple[AppVersion, int | None]:
        """Point `label` at the version `ref` names: (that version, where the label was)."""
        app = self.get(ref)
        with transaction(self._db) as db:
            old = self._labels.move(db, app.name, label, app.version, actor)
        return self.get(app.ref), old

    def rollback(self, name: str, label: str, actor: str) -> tuple[AppVersion, int]:
        """Move `label` back to the newest older version it pointed at before: (the version
        now labelled, the one it left). Repeating walks further back."""
        current = self._labels.target(name, label)
        if current is None:
            raise NotFoundError(f"app {name!r} has no {label!r} label",
                                hint=self._hint(name))
        earlier = self._labels.earlier(name, label, current)
        if earlier is None:
            raise InputError(f"{name}@{label} is version {current}; no older version was "
                             f"ever labelled {label}, so there is nothing to roll back to",
                             hint=f"label a version yourself: alicerce apps label {name}@N "
                                  f"{label}")
        app, _ = self.label(f"{name}@{earlier}", label, actor)
        return app, current

    def close(self) -> None:
        self._db.close()

    # -- helpers -------------------------------------------------------------------------
    def _build(self, row: sqlite3.Row | tuple[Any, ...]) -> AppVersion:
        name, version = str(row[0]), int(row[1])
        return AppVersion(name, version, str(row[2]), json.loads(row[3]), str(row[4]),
                          str(row[5]), str(row[6]), self._labels.on(name, version))

    def _hint(self, name: str) -> str:
        return self._labels.describe(name) or (
            f"deployed apps: {', '.join(self.names()) or 'none'}; deploy one with: "
            "alicerce apps deploy app.yaml")
