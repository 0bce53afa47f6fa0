import threading
from pathlib import Path

import numpy as np
import pytest

from alicerce.store.db import connect, transaction
from alicerce.store.sqlite import SQLiteStore
from alicerce.testing.store_contract import CHUNKING, EMB, StoreContract, make_write


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> SQLiteStore:
        s = SQLiteStore(tmp_path)
        yield s
        s.close()


def test_stale_or_missing_index_is_rebuilt(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    coll = store.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
    store.write_documents(coll, [make_write(f"d{i}", [f"text number {i} about topic {i % 7}"])
                                 for i in range(50)])
    vec = EMB.embed_queries(["text number 3"])[0]
    before = store.dense_search(coll, vec, 5, None)
    store.close()
    index = tmp_path / f"collection-{coll.id}.usearch"
    assert index.exists()
    # The database moves on without the index (as after a crash before the index was saved).
    other = SQLiteStore(tmp_path)
    other.write_documents(coll, [make_write("new", ["text number 3 brand new"])])
    other._ann.clear()
    (tmp_path / f"collection-{coll.id}.json").unlink()
    other.close()
    fresh = SQLiteStore(tmp_path)
    after = fresh.dense_search(coll, vec, 6, None)
    keys = [fresh.hits([i])[i].doc_key for i, _ in after]
    assert "new" in keys
    # The old neighbours are still found: same scores (ids may differ where the hashing
    # embedder gives several chunks the same score).
    old = [s for (i, s), key in zip(after, keys, strict=False) if key != "new"]
    np.testing.assert_allclose(old, [s for _, s in before], atol=1e-3)
    index.unlink()
    fresh._ann.clear()
    rebuilt = fresh.dense_search(coll, vec, 6, None)
    # Same neighbours after a rebuild from SQLite (ties may come back in another order).
    np.testing.assert_allclose([s for _, s in rebuilt], [s for _, s in after], atol=1e-3)
    assert rebuilt[0][0] == after[0][0]
    fresh.close()


def test_filtered_dense_search_beyond_exact_limit(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path, exact_search_limit=10)
    coll = store.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
    store.write_documents(coll, [make_write(f"d{i}", [f"words {i} shared"], group=str(i % 2))
                                 for i in range(60)])
    vec = EMB.embed_queries(["words 7 shared"])[0]
    hits = store.dense_search(coll, vec, 5, {"group": "1"})
    assert len(hits) == 5
    assert all(store.hits([i])[i].metadata["group"] == "1" for i, _ in hits)
    exact = SQLiteStore(tmp_path / "exact")
    c2 = exact.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
    exact.write_documents(c2, [make_write(f"d{i}", [f"words {i} shared"], group=str(i % 2))
                               for i in range(60)])
    ref = exact.dense_search(c2, vec, 5, {"group": "1"})
    np.testing.assert_allclose([s for _, s in hits], [s for _, s in ref], atol=2e-3)
    store.close()
    exact.close()


def test_integrity_and_wal(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    assert store.integrity() == "ok"
    mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    store.close()


def test_unreadable_store_path_is_a_clear_error(tmp_path: Path) -> None:
    from alicerce.errors import StoreError

    bad = tmp_path / "home"
    bad.mkdir()
    (bad / "alicerce.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="cannot open the store"):
        SQLiteStore(bad)


def test_index_is_kept_current_by_writes_and_not_rebuilt(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    coll = store.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
    store.write_documents(coll, [make_write("a", ["alpha words"])])
    store.write_documents(coll, [make_write("b", ["beta words"])])
    store.delete_documents(coll, ["a"])
    store.close()  # flushes the index mirrored through the writes
    index = tmp_path / f"collection-{coll.id}.usearch"
    stamp = index.stat().st_mtime_ns
    again = SQLiteStore(tmp_path)
    hits = again.dense_search(coll, EMB.embed_queries(["beta"])[0], 5, None)
    assert [again.hits([i])[i].doc_key for i, _ in hits] == ["b"]
    again.close()
    assert index.stat().st_mtime_ns == stamp  # loaded as saved, not rebuilt


def test_a_reader_sees_writes_made_by_another_process(tmp_path: Path) -> None:
    writer, reader = SQLiteStore(tmp_path), SQLiteStore(tmp_path)
    coll = writer.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
    writer.write_documents(coll, [make_write("a", ["alpha words"])])
    writer.flush()
    vec = EMB.embed_queries(["beta words"])[0]
    assert len(reader.dense_search(coll, vec, 5, None)) == 1
    writer.write_documents(coll, [make_write("b", ["beta words"])])
    writer.flush()
    top = reader.dense_search(coll, vec, 5, None)
    assert reader.hits([top[0][0]])[top[0][0]].doc_key == "b" and len(top) == 2
    writer.close()
    reader.close()


def test_a_write_waits_for_a_read_on_the_same_shared_connection(tmp_path: Path) -> None:
    """Server threads share a connection: one thread's unfinished read keeps an old
    snapshot, and after another process writes SQLite refuses a BEGIN IMMEDIATE at once
    (SQLITE_BUSY_SNAPSHOT, no busy handler). The write waits for the read instead."""
    path = tmp_path / "home.db"
    shared = connect(path, "CREATE TABLE t (x INTEGER)")
    with transaction(shared) as db:
        db.executemany("INSERT INTO t VALUES (?)", [(1,), (2,), (3,)])
    reading = shared.execute("SELECT x FROM t")
    assert reading.fetchone() == (1,)  # the read is still open, at the old snapshot
    with transaction(connect(path)) as other:
        other.execute("INSERT INTO t VALUES (4)")
    finish = threading.Timer(0.2, reading.close)
    finish.start()
    with transaction(shared) as db:
        db.execute("INSERT INTO t VALUES (5)")
    finish.join()
    assert [r[0] for r in shared.execute("SELECT x FROM t ORDER BY x")] == [1, 2, 3, 4, 5]
