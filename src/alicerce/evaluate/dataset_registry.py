"""Stored evaluation datasets: numbered, immutable versions of golden rows in the home's
database, so the console, the HTTP API and `eval run --dataset NAME@N` share them.

A file is still the way in (`alicerce datasets add`, or an upload); what is stored is the
parsed rows, so a version never changes under a run that used it. Saving rows a version
already holds returns that version (the content hash is the identity), and an accepted
review row makes a new version: the latest rows plus it. Runs record the dataset's name
and content hash, which is how a version finds its runs.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alicerce.datasets import Dataset, Row, build
from alicerce.errors import InputError, NotFoundError
from alicerce.store.db import connect, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS dataset_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    hash TEXT NOT NULL,
    rows INTEGER NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (name, version),
    UNIQUE (name, hash)
);
CREATE TABLE IF NOT EXISTS dataset_rows (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    row TEXT NOT NULL,
    PRIMARY KEY (name, version, seq)
)
"""
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
MAX_ROWS = 100_000  # per version: bounded before anything is written


@dataclass(frozen=True)
class DatasetVersion:
    """One stored version: `hash` is the `dataset_version` its runs record."""

    name: str
    version: int
    hash: str
    rows: int
    created_at: float
    created_by: str
    note: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InputError(f"bad dataset name {name[:80]!r}",
                         hint="use lowercase letters, digits, '.', '_' or '-' (64 at most), "
                              "starting with a letter or digit")
    return name


def row_json(row: Row) -> str:
    return json.dumps(asdict(row), ensure_ascii=False, sort_keys=True)


def row_from(data: dict[str, Any]) -> Row:
    return Row(**{**data, "sources": tuple(data.get("sources", ())),
                  "tags": tuple(data.get("tags", ()))})


class DatasetRegistry:
    def __init__(self, path: Path | str) -> None:
        self._db = connect(path, SCHEMA)

    def add(self, name: str, rows: Sequence[Row], *, actor: str = "local",
            note: str = "") -> tuple[DatasetVersion, bool]:
        """Store `rows` as the next version of `name`; (the version, whether it is new)."""
        check_name(name)
        if len(rows) > MAX_ROWS:
            raise InputError(f"{len(rows)} rows is over the {MAX_ROWS} a dataset may hold",
                             hint="split the file into several datasets")
        ds = build(name, rows)
        with transaction(self._db) as db:
            same = db.execute(f"SELECT {_COLS} FROM dataset_versions WHERE name=? AND hash=?",
                              (name, ds.version)).fetchone()
            if same is not None:
                return _version(same), False
            last = db.execute("SELECT MAX(version) FROM dataset_versions WHERE name=?",
                              (name,)).fetchone()[0]
            v = DatasetVersion(name, int(last or 0) + 1, ds.version, len(rows), time.time(),
                               actor, note[:500])
            db.execute("INSERT INTO dataset_versions VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (v.name, v.version, v.hash, v.rows, v.created_at, v.created_by, v.note))
            db.executemany("INSERT INTO dataset_rows VALUES (?, ?, ?, ?)",
                           [(name, v.version, i, row_json(r)) for i, r in enumerate(rows)])
        return v, True

    def extend(self, name: str, rows: Sequence[Row], *, actor: str = "local",
               note: str = "") -> tuple[DatasetVersion, bool]:
        """A new version: the latest rows, with `rows` added (a row whose id is already
        there replaces it, so correcting a reviewed answer twice keeps one row)."""
        base = list(self.get(name).rows) if self.exists(name) else []
        ids = {r.id for r in rows}
        return self.add(name, [r for r in base if r.id not in ids] + list(rows),
                        actor=actor, note=note)

    def exists(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM dataset_versions WHERE name=?",
                                (name,)).fetchone() is not None

    def version(self, ref: str) -> DatasetVersion:
        """`name` (the newest version) or `name@N`."""
        name, _, num = ref.partition("@")
        if num and not num.isdigit():
            raise InputError(f"bad dataset version in {ref[:80]!r}",
                             hint="name a version by its number: golden@3")
        sql = f"SELECT {_COLS} FROM dataset_versions WHERE name=? " + (
            "AND version=?" if num else "ORDER BY version DESC LIMIT 1")
        row = self._db.execute(sql, (name, int(num)) if num else (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no stored dataset {ref[:80]!r}",
                                hint="`alicerce datasets list` shows them; "
                                     "`alicerce datasets add FILE --name NAME` stores one")
        return _version(row)

    def get(self, ref: str) -> Dataset:
        """The rows of a version, as the evaluator takes them."""
        v = self.version(ref)
        return Dataset(v.name, v.hash, tuple(self.rows(v, 0, v.rows)), source=v.ref)

    def rows(self, v: DatasetVersion, offset: int, limit: int) -> list[Row]:
        return [row_from(json.loads(r[0])) for r in self._db.execute(
            "SELECT row FROM dataset_rows WHERE name=? AND version=? AND seq >= ? "
            "ORDER BY seq LIMIT ?", (v.name, v.version, offset, limit))]

    def versions(self, name: str) -> list[DatasetVersion]:
        return [_version(r) for r in self._db.execute(
            f"SELECT {_COLS} FROM dataset_versions WHERE name=? ORDER BY version DESC",
            (name,))]

    def all(self) -> list[DatasetVersion]:
        """The newest version of each dataset, by name."""
        return [_version(r) for r in self._db.execute(
            f"SELECT {_COLS} FROM dataset_versions d WHERE version = (SELECT MAX(version) "
            "FROM dataset_versions e WHERE e.name = d.name) ORDER BY name")]

    def close(self) -> None:
        self._db.close()


_COLS = "name, version, hash, rows, created_at, created_by, note"


def _version(r: Sequence[Any]) -> DatasetVersion:
    return DatasetVersion(r[0], int(r[1]), r[2], int(r[3]), float(r[4]), r[5], r[6])
