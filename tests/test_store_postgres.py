"""The PostgreSQL store on a real PostgreSQL 18 + pgvector: the store contract, BM25 equal
to SQLite FTS5's, Portuguese and English stemming with accent folding, atomic writes,
migrations, and replicas sharing one database."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg
import pytest

from alicerce.errors import StoreError
from alicerce.store.base import BoostWeights
from alicerce.store.pg_schema import MIGRATIONS
from alicerce.store.postgres import PostgresStore
from alicerce.store.sqlite import SQLiteStore
from alicerce.testing.store_contract import CHUNKING, EMB, StoreContract, make_write


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store(self, pg_url: str) -> PostgresStore:
        s = PostgresStore(pg_url)
        yield s
        s.close()


def test_bm25_scores_equal_sqlite_fts5(pg_url: str, tmp_path: Path) -> None:
    """Texts without stopwords, whose Porter and Snowball stems agree: every score equals
    FTS5's bm25 (with field weights), so the formula and the statistics are the same."""
    texts = [("refund travel receipts", "travel refund"), ("hotel taxi receipts receipts", "hotel"),
             ("vacation days holidays", "vacation"), ("receipts deadline thirty days", "deadline"),
             ("taxi hotel travel travel travel", "taxi")]
    writes = [make_write(f"d{i}", [t], title=title) for i, (t, title) in enumerate(texts)]
    pg, lite = PostgresStore(pg_url), SQLiteStore(tmp_path)
    for s in (pg, lite):
        s.write_documents(s.create_collection("kb", EMB.name, EMB.dim, CHUNKING), writes)
    for query in ("travel receipts", "hotel taxi days", "vacation"):
        for boosts in (BoostWeights(), BoostWeights(1, 1, 1), BoostWeights(0.01, 0, 2)):
            got = [(pg.hits([i])[i].doc_key, s) for i, s in pg.sparse_search(
                pg.collection("kb"), query, 5, None, boosts)]
            want = [(lite.hits([i])[i].doc_key, s) for i, s in lite.sparse_search(
                lite.collection("kb"), query, 5, None, boosts)]
            assert [k for k, _ in got] == [k for k, _ in want], (query, boosts)
            np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-9)
    pg.close()
    lite.close()


def test_portuguese_and_english_stemming_fold_accents(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    coll = store.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
    store.write_documents(coll, [
        make_write("ferias", ["São 30 dias de férias por ano, pedidos com antecedência."]),
        make_write("refund", ["Taxi and hotel expenses are refunded within a month."])])

    def top(query: str) -> list[str]:
        return [store.hits([i])[i].doc_key
                for i, _ in store.sparse_search(coll, query, 5, None, BoostWeights())]

    assert top("ferias") == ["ferias"]          # accent folded
    assert top("Férias e pedido") == ["ferias"]  # stemmed: pedidos -> pedid
    assert top("antecedencia") == ["ferias"]
    assert top("refunds for expense") == ["refund"]  # English stems
    assert top("xylophone ???") == []
    store.close()


def test_a_failed_write_commits_nothing(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    coll = store.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
    store.write_documents(coll, [make_write("a", ["alpha words"])])
    good = make_write("b", ["beta words"])
    bad = make_write("c", ["gamma words"])
    object.__setattr__(bad, "vectors", np.zeros((1, EMB.dim + 1), np.float32))  # wrong dim
    with pytest.raises(psycopg.DataError):
        store.write_documents(coll, [good, bad])
    assert set(store.document_hashes(coll)) == {"a"}
    assert [store.hits([i])[i].doc_key for i, _ in
            store.sparse_search(coll, "words", 5, None, BoostWeights())] == ["a"]
    assert store.collections()[0].chunks == 1
    store.close()


def test_migrations_run_once_and_a_newer_schema_is_refused(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    PostgresStore(pg_url).close()  # a second start applies nothing again
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute("SELECT version FROM alicerce_migrations ORDER BY 1").fetchall()
        assert rows == [(n,) for n in range(1, len(MIGRATIONS) + 1)]
        conn.execute("INSERT INTO alicerce_migrations (version, name) VALUES (99, 'future')")
    with pytest.raises(StoreError, match="has schema 99"):
        PostgresStore(pg_url)


def test_a_database_of_an_older_schema_is_brought_up_to_date(pg_url: str) -> None:
    """A database made by the first release (postings keyed without their counts) gets
    the covering key at the next start, its postings kept."""
    store = PostgresStore(pg_url)
    coll = store.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
    store.write_documents(coll, [make_write("a", ["alpha words here"])])
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # back to schema 1
        conn.execute("ALTER TABLE chunk_terms DROP CONSTRAINT chunk_terms_pkey, ADD CONSTRAINT "
                     "chunk_terms_pkey PRIMARY KEY (collection_id, term, chunk_id)")
        conn.execute("DELETE FROM alicerce_migrations WHERE version > 1")
    store = PostgresStore(pg_url)
    with psycopg.connect(pg_url) as conn:
        (key,) = conn.execute("SELECT indexdef FROM pg_indexes "
                              "WHERE indexname = 'chunk_terms_pkey'").fetchone()
    assert "INCLUDE (tf_title, tf_section, tf_text, len)" in key
    assert [c for c, _ in store.sparse_search(coll, "alpha", 5, None, BoostWeights())]
    store.close()


def test_an_unreachable_server_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://alicerce:s3cret@/alicerce?host={tmp_path}&port=1"
    with pytest.raises(StoreError, match="unreachable") as err:
        PostgresStore(url)
    assert "s3cret" not in str(err.value) and "ALICERCE_STORE" in str(err.value)


def test_two_stores_on_one_database_see_each_other(pg_url: str) -> None:
    """What replicas rely on: a write by one is read by the other at once, with no index
    file to reload."""
    one, two = PostgresStore(pg_url), PostgresStore(pg_url)
    coll = one.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
    one.write_documents(coll, [make_write("a", ["alpha words"])])
    seen = two.collection("kb")
    assert seen == coll
    vec = EMB.embed_queries(["beta words"])[0]
    two.write_documents(seen, [make_write("b", ["beta words"])])
    top = one.dense_search(coll, vec, 5, None)
    assert one.hits([top[0][0]])[top[0][0]].doc_key == "b" and len(top) == 2
    assert one.record_version(coll) == two.record_version(seen)
    one.close()
    two.close()


def test_filtered_dense_search_through_the_index_equals_exact(pg_url: str) -> None:
    exact, indexed = PostgresStore(pg_url), PostgresStore(pg_url, exact_search_limit=10)
    coll = exact.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
    exact.write_documents(coll, [make_write(f"d{i}", [f"words {i} shared"], group=str(i % 2))
                                 for i in range(60)])
    vec = EMB.embed_queries(["words 7 shared"])[0]
    want = exact.dense_search(coll, vec, 5, {"group": "1"})
    got = indexed.dense_search(coll, vec, 5, {"group": "1"})
    assert len(got) == 5
    assert all(indexed.hits([i])[i].metadata["group"] == "1" for i, _ in got)
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    exact.close()
    indexed.close()


def test_the_version_id_equals_sqlites_for_the_same_content(pg_url: str,
                                                            tmp_path: Path) -> None:
    """Version ids are content hashes, so a home moved to PostgreSQL keeps naming its
    collections' versions the same (traces and evaluation runs refer to them)."""
    writes = [make_write("B", ["beta"]), make_write("a", ["alpha"]), make_write("_c", ["c"])]
    ids = []
    for s in (PostgresStore(pg_url), SQLiteStore(tmp_path)):
        coll = s.create_collection("kb", EMB.name, EMB.dim, CHUNKING)
        s.write_documents(coll, writes)
        ids.append(s.record_version(coll))
        s.close()
    assert ids[0] == ids[1]
