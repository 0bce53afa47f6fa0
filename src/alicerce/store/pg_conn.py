"""Connections to PostgreSQL: a pool shared by the server's threads, migrations applied once,
and every driver failure turned into a `StoreError` that names the server (never its password).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alicerce.errors import StoreError, StoreUnavailableError
from alicerce.store.pg_schema import LOCK_KEY, MIGRATIONS, VERSION_TABLE

try:
    import psycopg
    from pgvector.psycopg import register_vector
    from psycopg.adapt import Dumper
    from psycopg.types.numeric import FloatLoader
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - depends on the install
    raise StoreError("the PostgreSQL store needs the postgres extra",
                     hint="pip install 'alicerce[postgres]'") from exc

CONNECT_TIMEOUT_S = 5
# How long a request waits for a pooled connection: short, so that while the database is
# down requests fail at once (503) instead of piling up.
CHECKOUT_TIMEOUT_S = 3


def describe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "an unparsable PostgreSQL URL"
    where = info.get("host") or "localhost"
    return f"postgresql://{info.get('user', '')}@{where}:{info.get('port', 5432)}/" \
           f"{info.get('dbname', '')}"


def _unreachable(url: str, exc: Exception) -> StoreUnavailableError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreUnavailableError(f"PostgreSQL at {describe(url)} is unreachable: {reason}",
                      hint="check that the server runs and the URL in ALICERCE_STORE "
                           "(user, password, database) is right")


def migrate(url: str) -> int:
    """Apply the migrations this database lacks; returns its schema version."""
    try:
        with (psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn,
              conn.transaction()):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            conn.execute(VERSION_TABLE)
            row = conn.execute("SELECT coalesce(max(version), 0) "
                               "FROM alicerce_migrations").fetchone()
            have = int(row[0]) if row else 0
            if have > len(MIGRATIONS):
                raise StoreError(
                    f"the database at {describe(url)} has schema {have}; this version "
                    f"of Alicerce knows up to {len(MIGRATIONS)}",
                    hint="upgrade Alicerce, or point ALICERCE_STORE at another database")
            for version, (name, statements) in enumerate(MIGRATIONS, start=1):
                if version <= have:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO alicerce_migrations (version, name) "
                             "VALUES (%s, %s)", (version, name))
        return len(MIGRATIONS)
    except psycopg.OperationalError as exc:
        raise _unreachable(url, exc) from exc


class _BoolAsInt(Dumper):
    oid = psycopg.postgres.types["int8"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


class Database:
    """A pool of autocommit connections; `tx()` wraps a transaction, `conn()` a plain use.

    One per URL and process (`shared_database`): the store and every registry share it."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.users = 0
        self._pool = ConnectionPool(url, min_size=1, max_size=max(1, size), open=False,
                                    kwargs={"autocommit": True,
                                            "connect_timeout": CONNECT_TIMEOUT_S},
                                    configure=self._configure, timeout=CHECKOUT_TIMEOUT_S)
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 2)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            self._pool.close()
            raise _unreachable(url, exc) from exc

    @staticmethod
    def _configure(conn: psycopg.Connection[Any]) -> None:
        register_vector(conn)
        # As SQLite gives them back: numeric sums and averages as floats, not Decimals, and
        # Python booleans stored as the integers 0 and 1.
        conn.adapters.register_loader("numeric", FloatLoader)
        conn.adapters.register_dumper(bool, _BoolAsInt)

    @contextmanager
    def conn(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as exc:
            raise _unreachable(self.url, exc) from exc

    @contextmanager
    def tx(self) -> Iterator[psycopg.Cursor[Any]]:
        """One transaction: everything in it commits together or not at all."""
        with self.conn() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    def release(self) -> None:
        """One user is done; the last one closes the pool."""
        with _shared_lock:
            self.users -= 1
            if self.users <= 0:
                _shared.pop(self.url, None)
                self._pool.close()


_shared: dict[str, Database] = {}
_shared_lock = threading.Lock()


def shared_database(url: str, size: int = 8) -> Database:
    """This process's pool for `url` (migrated first); call `release()` when done with it."""
    with _shared_lock:
        db = _shared.get(url)
        if db is None:
            migrate(url)
            db = _shared[url] = Database(url, size)
        db.users += 1
        return db
