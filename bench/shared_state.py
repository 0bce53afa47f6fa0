"""What sharing state across replicas costs per request: the rate limit counted in
PostgreSQL versus in memory, and an API key checked against PostgreSQL versus SQLite.

    python bench/shared_state.py [--n 2000] [--threads 4] [--pg-data /tmp/alicerce-bench-pg]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import machine

from alicerce.access.keys import ApiKey, KeyStore
from alicerce.server.limits import RateLimiter, SharedRateLimiter
from alicerce.testing.postgres import fresh_database, start_server


def timed(fn: Callable[[int], object], n: int, threads: int) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, calls per second) of `fn(i)` over n calls on `threads` threads."""
    times: list[float] = []

    def one(i: int) -> None:
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1000)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(n)))
    rate = n / (time.perf_counter() - start)
    cuts = statistics.quantiles(times, n=100)
    return cuts[49], cuts[98], rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--pg-data", default="/tmp/alicerce-bench-pg")
    args = ap.parse_args()
    url = fresh_database(start_server(Path(args.pg_data)))
    print(f"machine: {machine()}; PostgreSQL 18 on a Unix socket; {args.n} calls on "
          f"{args.threads} threads, 64 keys")
    keys = [ApiKey(f"k{i}", "bench", ("ask",), None, 10**9, 10**9, time.time())
            for i in range(64)]
    shared = SharedRateLimiter(url)
    for name, limiter in (("in memory", RateLimiter()), ("PostgreSQL", shared)):
        p50, p99, rate = timed(lambda i, lim=limiter: lim.admit(keys[i % 64]),  # type: ignore[misc]
                               args.n, args.threads)
        print(f"rate limit admit, {name:<11} p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  "
              f"{rate:8.0f}/s")
    shared.close()
    with tempfile.TemporaryDirectory() as tmp:
        stores = (("SQLite", KeyStore(Path(tmp) / "k.db")), ("PostgreSQL", KeyStore(url)))
        for name, store in stores:
            secrets = [store.create(f"k{i}", ["ask"])[1] for i in range(64)]
            p50, p99, rate = timed(lambda i, s=store, sec=secrets: s.verify(sec[i % 64]),  # type: ignore[misc]
                                   args.n, args.threads)
            print(f"key verify,       {name:<11} p50 {p50:6.3f} ms  p99 {p99:6.3f} ms  "
                  f"{rate:8.0f}/s")
            store.close()


if __name__ == "__main__":
    main()
