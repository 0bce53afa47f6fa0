"""usearch versus faiss HNSW on the same clustered vectors: build, recall@10, latency, deletes.

    python bench/ann_compare.py [--n 100000]      (faiss: pip install 'alicerce[bench]')
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import machine
from synthetic import clustered, exact_top, queries


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p) * 1000)


def bench_usearch(base: np.ndarray, qs: np.ndarray, truth: np.ndarray, m: int,
                  efs: list[int]) -> None:
    from usearch.index import Index

    idx = Index(ndim=base.shape[1], metric="cos", dtype="f16", connectivity=m,
                expansion_add=128, expansion_search=efs[0])
    t = time.perf_counter()
    idx.add(np.arange(len(base)), base, threads=0)
    rate = len(base) / (time.perf_counter() - t)
    for ef in efs:
        idx.expansion_search = ef
        lat, hits = [], 0
        for q, want in zip(qs, truth, strict=True):
            t = time.perf_counter()
            got = idx.search(q, 10, threads=1).keys
            lat.append(time.perf_counter() - t)
            hits += len(set(got.tolist()) & set(want.tolist()))
        print(f"usearch  M={m:<3} ef={ef:<4} build {rate:>8.0f} vec/s  recall@10 "
              f"{hits / truth.size:.4f}  p50 {pct(lat, 50):.3f} ms  p99 {pct(lat, 99):.3f} ms")
    t = time.perf_counter()
    idx.remove(np.arange(0, 1000))
    print(f"usearch  delete 1000 vectors: {(time.perf_counter() - t) * 1000:.1f} ms")


def bench_faiss(base: np.ndarray, qs: np.ndarray, truth: np.ndarray, m: int, ef: int) -> None:
    import faiss

    faiss.omp_set_num_threads(2)
    idx = faiss.IndexHNSWFlat(base.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = 128
    t = time.perf_counter()
    idx.add(base)
    build = time.perf_counter() - t
    idx.hnsw.efSearch = ef
    faiss.omp_set_num_threads(1)
    lat, hits = [], 0
    for q, want in zip(qs, truth, strict=True):
        t = time.perf_counter()
        _, got = idx.search(q[None, :], 10)
        lat.append(time.perf_counter() - t)
        hits += len(set(got[0].tolist()) & set(want.tolist()))
    print(f"faiss    M={m:<3} ef={ef:<4} build {len(base) / build:>8.0f} vec/s  recall@10 "
          f"{hits / truth.size:.4f}  p50 {pct(lat, 50):.3f} ms  p99 {pct(lat, 99):.3f} ms  "
          "delete: not supported by IndexHNSWFlat")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--efs", default="64,96", help="ef_search values for usearch")
    ap.add_argument("--faiss", action=argparse.BooleanOptionalAction, default=True)
    args = ap.parse_args()
    print(f"machine: {machine()}; {args.n} clustered 384-d vectors, {args.queries} queries")
    base = clustered(args.n, clusters=max(1000, args.n // 100))
    qs = queries(base, args.queries)
    truth = exact_top(base, qs, 10)
    bench_usearch(base, qs, truth, 16, [int(e) for e in args.efs.split(",")])
    if not args.faiss:
        return
    try:
        for ef in (64, 96):
            bench_faiss(base, qs, truth, 16, ef)
    except ImportError:
        print("faiss not installed: pip install 'alicerce[bench]'")


if __name__ == "__main__":
    main()
