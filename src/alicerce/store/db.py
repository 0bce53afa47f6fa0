"""SQLite connections and transactions shared by everything that keeps state in the home."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Union

from alicerce.errors import StoreError

if TYPE_CHECKING:
    from alicerce.store.sql import PgSql

# What the registries hold: SQLite's connection, or its stand-in on PostgreSQL.
Sql = Union[sqlite3.Connection, "PgSql"]

BUSY_TIMEOUT_S = 10.0


class Connection(sqlite3.Connection):
    """A connection that threads share (the server's workers): transactions take `lock`, so
    one thread's BEGIN never meets another's."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lock = threading.RLock()


def private_dir(home: Path) -> None:
    """The home holds documents, traces and conversations: only its owner may enter it."""
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    if home.stat().st_uid == os.getuid():
        os.chmod(home, 0o700)


def _private_file(path: Path) -> None:
    """The database and its WAL/SHM files readable by the owner alone (SQLite gives the
    WAL and SHM files the database file's mode)."""
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists() and p.stat().st_uid == os.getuid() and p.stat().st_mode & 0o077:
            os.chmod(p, 0o600)


def connect(path: Path | str, schema: str = "") -> Sql:
    """The registries' database: a PostgreSQL URL (`store/sql.py`), or a SQLite file in WAL
    mode, so readers never block the writer. `schema` runs in one transaction."""
    if isinstance(path, str) and path.startswith(("postgresql://", "postgres://")):
        from alicerce.store.sql import PgSql

        return PgSql(path, schema)
    return connect_sqlite(Path(path), schema)


def connect_sqlite(path: Path, schema: str = "") -> sqlite3.Connection:
    try:
        if str(path) != ":memory:":
            _private_file(path)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                             factory=Connection)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000:.0f}")
        if schema:
            with transaction(db):
                for statement in schema.split(";"):
                    db.execute(statement)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open the store at {path}: {exc}",
                         hint="check the path, its permissions and free disk space") from exc
    return db


def add_index(db: Sql, statement: str) -> None:
    """A `CREATE INDEX IF NOT EXISTS` on columns `add_columns` may just have added."""
    if not isinstance(db, sqlite3.Connection):
        with db.tx():
            db.execute_ddl(statement)
        return
    with transaction(db):
        db.execute(statement)


def add_columns(db: Sql, table: str, columns: dict[str, str]) -> None:
    """Add the columns a newer release needs to a table an older one created."""
    if not isinstance(db, sqlite3.Connection):
        with db.tx():
            for name, decl in columns.items():
                db.execute_ddl(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} {decl}")
        return
    have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
    with transaction(db):
        for name, decl in columns.items():
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


def _begin(db: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, waiting out SQLITE_BUSY_SNAPSHOT too: when another thread's read on
    this same shared connection holds an older snapshot, SQLite refuses at once without
    calling the busy handler; the read ends in milliseconds, so try again until the busy
    timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = 0.002
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


@contextmanager
def transaction(db: Sql) -> Iterator[Sql]:
    """BEGIN IMMEDIATE ... COMMIT; any exception rolls everything back."""
    if not isinstance(db, sqlite3.Connection):
        with db.tx():
            yield db
        return
    lock = db.lock if isinstance(db, Connection) else threading.RLock()
    with lock:
        _begin(db)
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
