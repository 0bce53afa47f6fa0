"""Copy the registries' tables (apps, prompts, keys, audit, traces, feedback, jobs, runs,
adapters' metadata...) between a SQLite home and PostgreSQL, verified, safe to rerun.

The tables are found by looking at the source, so a registry added later is copied without
a change here. A row the target has under the same key is overwritten (the source wins);
a table without a key (the label logs) is replaced whole. Both run in one transaction per
table. Afterwards every table must hold the same rows on both sides (compared as sorted,
canonical JSON), or the copy fails.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from alicerce.errors import StoreError
from alicerce.store.db import Sql, transaction

# The store's own tables (copied document by document by store/migrate.py), and live state
# that means nothing elsewhere (rate-limit windows, leases).
SKIPPED = {"meta", "collections", "documents", "chunks", "chunk_terms", "collection_versions",
           "alicerce_migrations", "rate_events", "leases", "sqlite_sequence"}
BATCH = 500


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]  # without PostgreSQL's generated `rowid`
    key: tuple[str, ...]  # primary key columns; empty for a keyless table
    ordered: bool  # has a `rowid` giving insertion order
    refs: tuple[str, ...] = ()  # tables its foreign keys point at (copied first)


@dataclass(frozen=True)
class TableCopy:
    name: str
    rows: int


def tables(db: Sql) -> dict[str, Table]:
    """The registry tables of `db`, with their columns and keys."""
    out: dict[str, Table] = {}
    if isinstance(db, sqlite3.Connection):
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                          "AND name NOT LIKE 'fts_%' ORDER BY name")]
        for name in names:
            info = db.execute(f"PRAGMA table_info({name})").fetchall()
            key = tuple(r[1] for r in sorted(info, key=lambda r: r[5]) if r[5])
            refs = tuple({r[2] for r in db.execute(f"PRAGMA foreign_key_list({name})")})
            out[name] = Table(name, tuple(r[1] for r in info), key, True, refs)
    else:
        cols: dict[str, list[str]] = {}
        for table, column in db.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"):
            cols.setdefault(table, []).append(column)
        keys = _constraints(db, "PRIMARY KEY", "key_column_usage", "u.column_name",
                            "ORDER BY u.ordinal_position")
        points = _constraints(db, "FOREIGN KEY", "constraint_column_usage", "u.table_name")
        for table, columns in cols.items():
            out[table] = Table(table, tuple(c for c in columns if c != "rowid"),
                               tuple(keys.get(table, ())), "rowid" in columns,
                               tuple(set(points.get(table, ()))))
    return {n: t for n, t in out.items() if n not in SKIPPED}


def _constraints(db: Sql, kind: str, view: str, column: str,
                 order: str = "") -> dict[str, list[str]]:
    """table -> the `column` of information_schema's `view` for its constraints of `kind`."""
    out: dict[str, list[str]] = {}
    for table, value in db.execute(
            f"SELECT tc.table_name, {column} FROM information_schema.table_constraints tc "
            f"JOIN information_schema.{view} u ON u.constraint_name = tc.constraint_name "
            f"AND u.table_schema = tc.table_schema WHERE tc.constraint_type = '{kind}' "
            f"AND tc.table_schema = current_schema() {order}"):
        out.setdefault(table, []).append(value)
    return out


def _in_order(found: dict[str, Table]) -> list[Table]:
    """Tables a foreign key points at before the tables that point at them."""
    out: list[Table] = []

    def visit(name: str) -> None:
        if name in found and found[name] not in out:
            for ref in sorted(found[name].refs):
                if ref != name:
                    visit(ref)
            out.append(found[name])

    for name in sorted(found):
        visit(name)
    return out


def _rows(db: Sql, table: Table, columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    order = " ORDER BY rowid" if table.ordered else ""
    return [tuple(r) for r in db.execute(f"SELECT {', '.join(columns)} FROM {table.name}"
                                         f"{order}").fetchall()]


def _digest(rows: list[tuple[Any, ...]]) -> str:
    def canonical(row: tuple[Any, ...]) -> str:
        return json.dumps([bytes(v).hex() if isinstance(v, bytes | memoryview) else v
                           for v in row], sort_keys=True, default=str)
    return hashlib.sha256("\n".join(sorted(canonical(r) for r in rows)).encode()).hexdigest()


def _write(dst: Sql, table: Table, columns: tuple[str, ...],
           rows: list[tuple[Any, ...]]) -> None:
    marks = ", ".join("?" * len(columns))
    sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks})"
    if table.key:
        rest = [c for c in columns if c not in table.key]
        sql += f" ON CONFLICT ({', '.join(table.key)}) DO " + (
            "UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in rest) if rest
            else "NOTHING")
    with transaction(dst) as db:
        if not table.key:
            db.execute(f"DELETE FROM {table.name}")
        for i in range(0, len(rows), BATCH):
            db.executemany(sql, rows[i : i + BATCH])
        if not isinstance(db, sqlite3.Connection):  # identities continue after copied keys
            for (column,) in db.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                    "current_schema() AND table_name = ? AND is_identity = 'YES' AND "
                    "column_name <> 'rowid'", (table.name,)).fetchall():
                db.execute(f"SELECT setval(pg_get_serial_sequence('{table.name}', "
                           f"'{column}'), greatest(max({column}), 1)) FROM {table.name}")


def copy_tables(src: Sql, dst: Sql) -> list[TableCopy]:
    """Copy every registry table the target also has; verify each afterwards."""
    theirs = tables(dst)
    done = []
    for table in _in_order(tables(src)):
        name = table.name
        if name not in theirs:
            continue
        target = theirs[name]
        columns = tuple(c for c in table.columns if c in target.columns)
        rows = _rows(src, table, columns)
        _write(dst, target, columns, rows)
        if _digest(_rows(dst, target, columns)) != _digest(rows):
            raise StoreError(f"table {name}: the copy differs from the source "
                             "(does the target hold rows the source lacks?)",
                             hint="copy into an empty database, or run the migration again")
        done.append(TableCopy(name, len(rows)))
    return done
