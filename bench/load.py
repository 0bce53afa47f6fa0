"""Load and soak on a live `alicerce serve` with the default model and settings (issue 16).

    python bench/load.py                       # 16 clients x 300 s, qwen-1.5b, defaults
    python bench/load.py --clients 4 --seconds 60 --model smollm2-135m   # a quick look

The sample handbook is ingested into a fresh home and served with auth on. Each client is a
well-behaved program with a 120 s timeout that loops over mixed routes until the time is up:
app answers (native ask and streamed chat completions, mostly distinct questions, some
repeated so the cache serves them), raw-model completions, embeddings, model and trace
listings, and feedback on its own answers. A 429/503 is honoured by sleeping its Retry-After
(at most 10 s). Printed: requests by route and status, 5xx (target 0), client timeouts,
p50/p99 latency per route, early 503s, and the server's RSS every 15 s (target: flat after
warm-up). Exits 1 on any 5xx or timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
from common import machine

from alicerce import Alicerce, Settings
from alicerce.testing.procs import serving

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120.0


class Tally:
    def __init__(self) -> None:
        self.status: Counter[tuple[str, int | str]] = Counter()
        self.latency: defaultdict[str, list[float]] = defaultdict(list)
        self.traces: list[str] = []


async def request(client: httpx.AsyncClient, tally: Tally, route: str, method: str,
                  path: str, body: object = None, stream: bool = False) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        if stream:
            async with client.stream(method, path, json=body) as r:
                async for _ in r.aiter_lines():
                    pass
        else:
            r = await client.request(method, path, json=body)
    except httpx.TimeoutException:
        tally.status[(route, "timeout")] += 1
        return None
    except httpx.HTTPError as exc:
        tally.status[(route, f"error {type(exc).__name__}")] += 1
        return None
    tally.status[(route, r.status_code)] += 1
    if r.status_code < 400:
        tally.latency[route].append(time.perf_counter() - started)
    if r.status_code in (429, 503):
        await asyncio.sleep(min(10.0, float(r.headers.get("retry-after", "2"))))
    return r


async def client_loop(base: str, key: str, model: str, questions: list[str], end: float,
                      tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=TIMEOUT_S) as c:
        i = 0
        while time.monotonic() < end:
            i += 1
            pick = rng.random()
            q = rng.choice(questions)
            if rng.random() < 0.7:  # most questions are new to the cache
                q = f"{q} (pergunta {seed}-{i})"
            if pick < 0.35:
                r = await request(c, tally, "ask", "POST", "/v1/apps/handbook/ask",
                                  {"question": q, "max_tokens": 128})
                if r is not None and r.status_code == 200:
                    tally.traces.append(r.json()["trace_id"])
            elif pick < 0.55:
                await request(c, tally, "chat (app, stream)", "POST", "/v1/chat/completions",
                              {"model": "handbook", "stream": True, "max_tokens": 128,
                               "messages": [{"role": "user", "content": q}]}, stream=True)
            elif pick < 0.65:
                await request(c, tally, "chat (raw model)", "POST", "/v1/chat/completions",
                              {"model": model, "max_tokens": 48,
                               "messages": [{"role": "user", "content": f"Resuma: {q}"}]})
            elif pick < 0.8:
                await request(c, tally, "embeddings", "POST", "/v1/embeddings",
                              {"model": "e5-small", "input": [q, q + " ?"]})
            elif pick < 0.9:
                await request(c, tally, "models", "GET", "/v1/models")
            elif tally.traces and pick < 0.95:
                await request(c, tally, "feedback", "POST", "/v1/feedback",
                              {"trace_id": rng.choice(tally.traces), "score": 1})
            else:
                await request(c, tally, "traces", "GET", "/v1/traces?limit=20")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(base: str, pid: int, key: str, model: str, clients: int,
              seconds: float) -> tuple[Tally, list[tuple[float, float]]]:
    questions = [json.loads(line)["question"] for line in
                 (ROOT / "examples" / "handbook-golden.jsonl").read_text().splitlines()]
    tally, rss = Tally(), [(0.0, rss_mb(pid))]
    started = time.monotonic()
    end = started + seconds

    async def sample() -> None:
        while time.monotonic() < end + TIMEOUT_S:
            await asyncio.sleep(15)
            rss.append((time.monotonic() - started, rss_mb(pid)))

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(client_loop(base, key, model, questions, end, tally, s)
                           for s in range(clients)))
    sampler.cancel()
    rss.append((time.monotonic() - started, rss_mb(pid)))
    return tally, rss


def report(tally: Tally, rss: list[tuple[float, float]], wall: float) -> int:
    routes = sorted({r for r, _ in tally.status})
    print(f"\n{'route':<22}{'requests by status':<44}{'p50 s':>8}{'p99 s':>8}")
    for route in routes:
        by = {s: n for (r, s), n in tally.status.items() if r == route}
        lat = sorted(tally.latency[route])
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
        shown = ", ".join(f"{s}: {n}" for s, n in sorted(by.items(), key=str))
        print(f"{route:<22}{shown:<44}{p50:>8.2f}{p99:>8.2f}")
    total = sum(tally.status.values())
    fivexx = sum(n for (_, s), n in tally.status.items() if isinstance(s, int) and s >= 500
                 and s != 503)
    early = sum(n for (_, s), n in tally.status.items() if s == 503)
    timeouts = sum(n for (_, s), n in tally.status.items() if not isinstance(s, int))
    print(f"\n{total} requests in {wall:.0f} s; 5xx other than 503: {fivexx} (target 0); "
          f"503 with Retry-After: {early}; client timeouts/errors: {timeouts} (target 0)")
    warm = [m for t, m in rss if t >= 60] or [rss[-1][1]]
    print("RSS MB over time: " + ", ".join(f"{t:.0f}s {m:.0f}" for t, m in rss))
    print(f"RSS after warm-up: min {min(warm):.0f} MB, max {max(warm):.0f} MB, "
          f"growth {max(warm) - min(warm):.0f} MB ({(max(warm) / min(warm) - 1) * 100:.1f}%)")
    return 1 if fivexx or timeouts else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--model", default="qwen-1.5b", help="the generator (default settings "
                    "otherwise)")
    ap.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                    help="a server setting, e.g. --set llm_parallel=2 (repeatable)")
    args = ap.parse_args()
    extra = {f"ALICERCE_{k.strip().upper()}": v for k, v in
             (item.split("=", 1) for item in args.set)}
    print(f"# load: {args.clients} clients x {args.seconds:.0f} s, {args.model}, "
          f"settings {' '.join(args.set) or 'default'}, {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        env = {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_GENERATOR": args.model,
               **extra}
        with Alicerce(Settings.load(home=home, generator=args.model)) as alc:
            alc.ingest([ROOT / "examples" / "handbook"], "handbook")
            _, key = alc.keys.create("load", ["ask", "models"], rpm=10**6, tpm=10**9)
        with serving(env, Path(tmp) / "server.log") as (base, proc):
            t0 = time.monotonic()
            tally, rss = asyncio.run(run(base, proc.pid, key, args.model, args.clients,
                                         args.seconds))
            code = report(tally, rss, time.monotonic() - t0)
        log = (Path(tmp) / "server.log").read_text()
        errors = [ln for ln in log.splitlines() if "ERROR" in ln or "Traceback" in ln]
        print(f"server log: {len(errors)} error lines" + "".join(f"\n  {e}"
                                                                for e in errors[:10]))
    sys.exit(code)


if __name__ == "__main__":
    main()
