"""Load on a live `alicerce serve` from its own process: batching, latency, overhead, memory.

    python bench/serve.py [--model qwen-0.5b] [--clients 1,4,8,16] [--requests 3]
                          [--max-tokens 64] [--soak-s 300]
    python bench/serve.py --quick          # CI size: smollm2-135m, 1 and 2 clients, no soak

- Throughput: streamed chat completions on a raw model, each client sending `--requests`
  distinct prompts back to back; generated tokens per second over the wall time, p50/p99
  latency and time to first token per concurrency. Target: 8 clients >= 2.5x one client
  (llama.cpp's continuous batching over `llm_parallel` slots).
- Cached answer: the same question to an app, repeated; client-side p50 (target <= 5 ms).
- /v1/embeddings (one text) versus the same embedder called in this process.
- Memory: the server's RSS at rest, peak under load, and every 30 s over a soak of 8 clients
  (no growth expected).
Errors other than deliberate 429/503 are counted and reported; a run with errors exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from common import machine

from alicerce import Alicerce

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ["rivers", "volcanoes", "bridges", "owls", "tea", "chess", "glaciers", "bees",
          "lighthouses", "maps", "violins", "deserts", "comets", "bread", "trains", "coral"]


@dataclass
class Load:
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: list[str] = field(default_factory=list)
    refused: int = 0


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def one(client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int,
              load: Load) -> None:
    body = {"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0.7,
            "seed": 1, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": prompt}]}
    t0 = time.perf_counter()
    first = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code in (429, 503):
            load.refused += 1
            return
        if r.status_code != 200:
            load.errors.append(f"{r.status_code} {(await r.aread())[:200]!r}")
            return
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                load.errors.append(chunk["error"]["message"])
            elif chunk.get("usage"):
                load.tokens += chunk["usage"]["completion_tokens"]
            elif chunk["choices"] and chunk["choices"][0]["delta"].get("content") and not first:
                first = time.perf_counter()
    load.latencies.append(time.perf_counter() - t0)
    if first:
        load.ttfts.append(first - t0)


async def run_clients(base: str, key: str, model: str, clients: int, requests: int,
                      max_tokens: int, seconds: float = 0.0) -> tuple[Load, float]:
    load = Load()
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as client:
        async def worker(w: int) -> None:
            i = 0
            end = time.perf_counter() + seconds
            while (i < requests) if not seconds else (time.perf_counter() < end):
                topic = TOPICS[(w * 7 + i) % len(TOPICS)]
                await one(client, model, f"Client {w}, request {i}: write three sentences "
                                         f"about {topic}.", max_tokens, load)
                i += 1
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
    return load, time.perf_counter() - t0


def start(home: Path, model: str, parallel: int) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_GENERATOR": model,
           "ALICERCE_LLM_PARALLEL": str(parallel), "ALICERCE_QUEUE_SIZE": "64",
           "ALICERCE_LLM_CONTEXT": str(max(4096, 512 * parallel))}
    proc = subprocess.Popen([sys.executable, "-m", "alicerce", "serve", "--port", str(port),
                             "--log-level", "warning"], env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            sys.exit("the server exited before it was ready")
        time.sleep(0.5)
    proc.kill()
    sys.exit("the server was not ready in 600 s")


def timed(fn: object, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="qwen-0.5b")
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--soak-s", type=float, default=300)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.model, args.clients, args.requests, args.max_tokens, args.soak_s = (
            "smollm2-135m", "1,2", 2, 8, 0)
    levels = [int(c) for c in args.clients.split(",")]
    print(f"machine: {machine()}; model {args.model}, {args.max_tokens} tokens per request, "
          f"{args.requests} requests per client", flush=True)
    home = Path(tempfile.mkdtemp()) / "h"
    with Alicerce.open(home) as alc:
        alc.ingest([ROOT / "examples" / "handbook"], "handbook")
        _, key = alc.keys.create("bench", ["ask", "admin"], rpm=10**6, tpm=10**9)
    proc, base = start(home, args.model, max(levels))
    failed = False
    try:
        rest = rss_mb(proc.pid)
        print(f"server RSS at rest: {rest:.0f} MB", flush=True)
        results = {}
        peak = rest
        for c in levels:
            load, wall = asyncio.run(run_clients(base, key, args.model, c, args.requests,
                                                 args.max_tokens))
            peak = max(peak, rss_mb(proc.pid))
            results[c] = load.tokens / wall
            failed |= bool(load.errors)
            print(f"clients {c:>2}: {load.tokens / wall:6.1f} tok/s  latency p50 "
                  f"{pct(load.latencies, .5):6.2f} s p99 {pct(load.latencies, .99):6.2f} s  "
                  f"TTFT p50 {pct(load.ttfts, .5) * 1000:7.0f} ms p99 "
                  f"{pct(load.ttfts, .99) * 1000:7.0f} ms  requests {len(load.latencies)}  "
                  f"errors {len(load.errors)}  refused {load.refused}"
                  + (f"  first error: {load.errors[0]}" if load.errors else ""), flush=True)
        if 1 in results and 8 in results:
            print(f"batching: 8 clients / 1 client throughput = {results[8] / results[1]:.2f}x"
                  " (target >= 2.5x)")
        print(f"server RSS peak under load: {peak:.0f} MB", flush=True)

        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, headers=headers, timeout=600) as client:
            q = {"question": "Qual o prazo para enviar os comprovantes?", "max_tokens": 32}
            first = client.post("/v1/apps/handbook/ask", json=q)
            failed |= first.status_code != 200
            cached = timed(lambda: client.post("/v1/apps/handbook/ask", json=q), 200)
            print(f"cached answer: p50 {statistics.median(cached):.2f} ms, p99 "
                  f"{pct(cached, .99):.2f} ms (target p50 <= 5 ms)")
            body = {"model": "e5-small", "input": "Qual o prazo para enviar os comprovantes?"}
            http = timed(lambda: client.post("/v1/embeddings", json=body), 100)
        with Alicerce.open(home) as alc:
            alc.embed(["warm up"])
            local = timed(lambda: alc.embed([body["input"]]), 100)
        print(f"embeddings, one text: HTTP p50 {statistics.median(http):.2f} ms, in-process "
              f"p50 {statistics.median(local):.2f} ms, added "
              f"{statistics.median(http) - statistics.median(local):.2f} ms")

        if args.soak_s:
            samples = [rss_mb(proc.pid)]

            async def soak() -> Load:
                task = asyncio.create_task(run_clients(base, key, args.model, 8, 0,
                                                       args.max_tokens, args.soak_s))
                while not task.done():
                    await asyncio.sleep(30)
                    samples.append(rss_mb(proc.pid))
                return (await task)[0]
            load = asyncio.run(soak())
            failed |= bool(load.errors)
            print(f"soak {args.soak_s:.0f} s, 8 clients: {len(load.latencies)} requests, "
                  f"errors {len(load.errors)}; RSS every 30 s (MB): "
                  + ", ".join(f"{m:.0f}" for m in samples)
                  + f"; growth first->last {samples[-1] - samples[0]:+.0f} MB")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
