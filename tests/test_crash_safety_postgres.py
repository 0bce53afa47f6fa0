"""SIGKILL an ingest into PostgreSQL half-way (a real subprocess): what was committed is
whole (documents with all their chunks, keyword statistics that match the postings), the
rerun keeps it and finishes, and the result equals a clean ingest."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
from test_crash_safety import corpus, ingest_cmd

from alicerce import Alicerce, Settings


def count(url: str, sql: str) -> int:
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(sql).fetchone()
            return int(row[0]) if row and row[0] is not None else 0
    except psycopg.errors.UndefinedTable:
        return 0


def test_sigkill_mid_ingest_into_postgresql_then_resume(tmp_path: Path, pg_url: str) -> None:
    folder = tmp_path / "docs"
    corpus(folder, files=8, per_file=400)
    env = {**os.environ, "ALICERCE_HOME": str(tmp_path / "h"), "ALICERCE_EMBEDDER": "hashing",
           "ALICERCE_STORE": pg_url}
    proc = subprocess.Popen(ingest_cmd(folder), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while count(pg_url, "SELECT count(*) FROM chunks") < 600 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = count(pg_url, "SELECT count(*) FROM documents")
    assert 0 < partial < 8 * 400, "the kill must land half-way"
    # Whole documents only (each record is one chunk here), and BM25's statistics agree
    # with the postings that were committed with them.
    assert count(pg_url, "SELECT count(*) FROM documents d WHERE NOT EXISTS "
                         "(SELECT 1 FROM chunks c WHERE c.document_id = d.id)") == 0
    assert count(pg_url, "SELECT count(*) FROM collections c WHERE fts_rows <> (SELECT "
                         "count(*) FROM chunks k WHERE k.collection_id = c.id) OR fts_tokens "
                         "<> (SELECT coalesce(sum(fts_len), 0) FROM chunks k WHERE "
                         "k.collection_id = c.id)") == 0
    resumed = subprocess.run(ingest_cmd(folder), env=env, capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{partial} unchanged" in resumed.stdout  # committed work was kept
    clean = Settings.load(home=tmp_path / "c", embedder="hashing")
    with Alicerce(clean) as alc:
        alc.ingest([folder], "kb")
        want = alc.collections()[0]
    with Alicerce(Settings.load(home=tmp_path / "h", embedder="hashing",
                                store=pg_url)) as pg:
        got = pg.collections()[0]
        assert (got.version, got.documents, got.chunks) == (want.version, want.documents,
                                                            want.chunks)
