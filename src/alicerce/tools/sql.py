"""The sql tool: read-only queries over one SQLite file the app names.

Read-only three times over: the file is opened with `mode=ro`, `query_only` is on, and an
authorizer allows only reading (SELECT, reading columns, functions, CTEs): INSERT, UPDATE,
DELETE, DDL, PRAGMA and ATTACH are refused by SQLite itself before anything runs. A progress
handler stops a query at its time cap; results stop at `max_rows`.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from alicerce.errors import InputError
from alicerce.tools.base import Tool, ToolFailed, strict

_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
            getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
MAX_CELL = 200


class SqlOptions(BaseModel):
    path: str
    max_rows: int = Field(50, ge=1, le=1000)
    timeout_s: float = Field(5.0, gt=0, le=60)


def _open(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
    db.execute("PRAGMA query_only = ON")
    db.set_authorizer(lambda action, *_: sqlite3.SQLITE_OK if action in _ALLOWED
                      else sqlite3.SQLITE_DENY)
    return db


def tables(path: Path) -> str:
    """`table(col type, ...)` lines: what the model needs to write a query."""
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        lines = []
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type IN "
                                  "('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY 1"):
            cols = db.execute(f'PRAGMA table_info("{name}")').fetchall()
            lines.append(f"{name}({', '.join(f'{c[1]} {c[2]}'.strip() for c in cols)})")
        return "; ".join(lines)
    finally:
        db.close()


def sql(options: dict[str, Any]) -> Tool:
    opts = SqlOptions.model_validate(options)
    path = Path(opts.path)
    if not path.is_file():
        raise InputError(f"sql: no database file {path}", hint="give the path of a SQLite file")
    try:
        schema = tables(path)
    except sqlite3.DatabaseError as exc:
        raise InputError(f"sql: {path} is not a readable SQLite database: {exc}") from None

    def run(query: str) -> str:
        db = _open(path)
        deadline = time.monotonic() + opts.timeout_s
        db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            cur = db.execute(query)
            rows = cur.fetchmany(opts.max_rows + 1)
        except sqlite3.DatabaseError as exc:
            message = str(exc)
            if "not authorized" in message:
                message = "only reading (SELECT) is allowed"
            elif "interrupted" in message:
                message = f"the query ran past {opts.timeout_s:g} s"
            raise ToolFailed(f"the query failed: {message}") from None
        except (sqlite3.Warning, sqlite3.ProgrammingError) as exc:
            raise ToolFailed(f"the query failed: {exc}") from None
        finally:
            db.close()
        names = [d[0] for d in cur.description or ()]
        more = len(rows) > opts.max_rows
        lines = [" | ".join(names)] + [" | ".join(_cell(v) for v in r)
                                       for r in rows[: opts.max_rows]]
        if more:
            lines.append(f"(only the first {opts.max_rows} rows)")
        return "\n".join(lines) if rows else " | ".join(names) + "\n(no rows)"

    args = strict(query=(str, Field(description="one SQLite SELECT statement",
                                    max_length=4000)))
    return Tool("sql", f"Runs one read-only SQL SELECT over the database. Tables: {schema}",
                args, run, meta={"path": str(path)})


def _cell(v: Any) -> str:
    text = "NULL" if v is None else str(v)
    return text if len(text) <= MAX_CELL else text[:MAX_CELL] + "…"
