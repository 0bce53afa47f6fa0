"""Requests per second of cached answers with 1, 2 and 4 replicas on one PostgreSQL, behind
nginx (deploy/nginx/alicerce.conf): the scaling curve, and where it stops on this machine.

Every replica is a real `alicerce serve` (default embedder, smollm2-135m) with ALICERCE_STORE
set; each has its own answer cache, so each is primed with the question first. Then
`--clients` concurrent clients ask it through nginx for `--seconds`: every request checks
its key and rate limit in PostgreSQL and is answered from a replica's cache.

    python bench/replicas.py [--replicas 1,2,4] [--clients 16] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
from common import machine

from alicerce import Alicerce, Settings
from alicerce.testing.postgres import fresh_database, start_server
from alicerce.testing.procs import nginx, serving

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Qual o prazo para enviar os comprovantes?"


async def load(base: str, key: str, clients: int, seconds: float) -> tuple[int, list[float]]:
    """(answers with status 200, latencies in ms) of `clients` loops for `seconds`."""
    times: list[float] = []
    ok = 0
    end = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {key}"}

    async def loop(client: httpx.AsyncClient) -> None:
        nonlocal ok
        while time.monotonic() < end:
            t = time.perf_counter()
            r = await client.post(base + "/v1/apps/handbook/ask", headers=headers,
                                  json={"question": QUESTION})
            times.append((time.perf_counter() - t) * 1000)
            if r.status_code == 200 and r.json()["cached"]:
                ok += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(*(loop(client) for _ in range(clients)))
    return ok, times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicas", default="1,2,4")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--pg-data", default="/tmp/alicerce-bench-pg")
    args = ap.parse_args()
    url = fresh_database(start_server(Path(args.pg_data)))
    work = Path(tempfile.mkdtemp(prefix="alicerce-replicas-"))
    settings = Settings.load(home=work / "setup", store=url)
    with Alicerce(settings) as alc:
        alc.ingest([ROOT / "examples" / "handbook"], "handbook")
        _, key = alc.keys.create("bench", ["ask"], rpm=10**9, tpm=10**12)
    print(f"machine: {machine()}; PostgreSQL 18 (Unix socket) and nginx on the same machine; "
          f"{args.clients} clients x {args.seconds:.0f} s per row, one cached question")
    print(f"{'replicas':>8}{'answers/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'vs 1':>7}")
    first = 0.0
    for n in (int(x) for x in args.replicas.split(",")):
        with ExitStack() as stack:
            bases = []
            for i in range(n):
                env = {**os.environ, "ALICERCE_HOME": str(work / f"r{n}-{i}"),
                       "ALICERCE_STORE": url, "ALICERCE_GENERATOR": "smollm2-135m",
                       "ALICERCE_LLM_PARALLEL": "1", "ALICERCE_MAX_TOKENS": "32"}
                base, _ = stack.enter_context(serving(env, work / f"r{n}-{i}.log"))
                bases.append(base)
                httpx.post(base + "/v1/apps/handbook/ask", json={"question": QUESTION},
                           headers={"Authorization": f"Bearer {key}"}, timeout=300)
            proxy = stack.enter_context(nginx(ROOT / "deploy" / "nginx" / "alicerce.conf",
                                              [b[7:] for b in bases], work / f"nginx-{n}"))
            ok, times = asyncio.run(load(proxy, key, args.clients, args.seconds))
        rate = ok / args.seconds
        first = first or rate
        cuts = statistics.quantiles(times, n=100)
        print(f"{n:>8}{rate:>11.1f}{cuts[49]:>9.1f}{cuts[98]:>9.1f}{rate / first:>6.2f}x",
              flush=True)


if __name__ == "__main__":
    main()
