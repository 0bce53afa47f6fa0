"""`alicerce migrate`: a home's collections and registry tables copied between SQLite and
PostgreSQL, each part verified and safe to rerun (store/migrate.py, store/copy_tables.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from alicerce.config import Settings
from alicerce.core.home import Home
from alicerce.errors import InputError
from alicerce.store.copy_tables import TableCopy, copy_tables
from alicerce.store.db import connect
from alicerce.store.migrate import CollectionCopy, Progress, copy_collections


@dataclass(frozen=True)
class Migration:
    collections: list[CollectionCopy]
    tables: list[TableCopy]


def _store(where: str) -> str:
    if where == "sqlite":
        return ""
    if not where.startswith(("postgresql://", "postgres://")):
        raise InputError(f"unknown store {where!r}",
                         hint="use 'sqlite' or a postgresql://user:pass@host/db URL")
    return where


def migrate(home: Home, to: str, source: str | None, names: Sequence[str] | None,
            progress: Progress | None) -> Migration:
    src_url = home.settings.store if source is None else _store(source)
    dst_url = _store(to)
    if src_url == dst_url:
        raise InputError("the source and the target are the same store",
                         hint="give --to the other one (sqlite or a PostgreSQL URL)")
    # Opening a home on each side creates every registry's tables there.
    homes = [home if url == home.settings.store else
             Home(Settings.load(**{**home.settings.model_dump(), "store": url}))
             for url in (src_url, dst_url)]
    try:
        collections = copy_collections(homes[0].store, homes[1].store, names, progress)
        if names:
            return Migration(collections, [])
        homes[0].traces.flush()
        src, dst = connect(homes[0].db_path), connect(homes[1].db_path)
        try:
            return Migration(collections, copy_tables(src, dst))
        finally:
            src.close()
            dst.close()
    finally:
        for h in homes:
            if h is not home:
                h.close()
