"""Tracing cost: per-request overhead, store growth, and `traces list` on a million traces.

    python bench/traces.py [--rows 1000000] [--home /tmp/alicerce-bench-traces]

- Overhead: a real answer's trace (spans, lineage) is recorded 20,000 times. The request
  thread pays `record()` (build and enqueue); the writer thread's share is the wall time to
  store them all, per trace, which on this 2-core machine competes with requests for the
  GIL. Their sum is set against a cached answer's latency through a live `alicerce serve`
  (client-side p50; the cached path records a trace too). Targets: <= 2 ms and <= 3%.
- Growth: bytes the database grows per 10,000 such traces (after a WAL checkpoint).
- Filters: the table is filled to `--rows` traces (20 apps, 50 callers, 2% errors, 1% with
  feedback) and `find()` (what `traces list` and GET /v1/traces call) is timed with each
  filter, median of 5. Target: < 200 ms. The full CLI command is timed too (it adds the
  Python start-up).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from common import machine

from alicerce import Alicerce, Settings
from alicerce.store.db import transaction
from alicerce.testing.fakes import ScriptedGenerator
from alicerce.testing.procs import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[1]
REPLY = "Os comprovantes devem ser enviados em até 30 dias corridos após a despesa [1]."


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def sample(home: Path) -> Alicerce:
    """A home whose traces look like real answers: the handbook, the hashing embedder (the
    spans' shape does not depend on the embedder) and a scripted model."""
    alc = Alicerce(Settings.load(home=home, embedder="hashing", generator="fake",
                                 abstain_below=0.0))
    alc.use_generator("fake", ScriptedGenerator(REPLY, name="fake"))
    alc.ingest([ROOT / "examples" / "handbook"], "handbook")
    return alc


def overhead(alc: Alicerce, n: int = 20_000) -> dict[str, tuple[float, float]]:
    """(request-thread, writer) seconds per trace for a generated answer's trace and for the
    one-span trace a cache hit leaves (built as server/service.py builds it)."""
    a = alc.ask("Qual o prazo para enviar os comprovantes?", "handbook")
    t = alc.traces.get(a.trace_id)
    answer = {"answer": t.answer, "abstained": False, "citations": t.citations}
    cache_span = [{"name": "cache", "start_ms": 0.0, "ms": 0.4, "attrs": {
        "kind": "exact", "first_trace": t.id, "answer": t.answer}}]
    out = {}
    for kind, spans in (("answer", t.spans), ("cache hit", cache_span)):
        put = 0.0
        start = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            alc.traces.record("handbook", "bench", f"{t.question} {i}", answer=answer,
                              spans=spans, lineage=t.lineage, latency_ms=12.5)
            put += time.perf_counter() - t0
            if i % 5000 == 4999:
                alc.traces.flush()  # stay under the queue's bound
        alc.traces.flush()
        out[kind] = (put / n, (time.perf_counter() - start - put) / n)
    return out


def growth(alc: Alicerce, db: Path) -> float:
    def size() -> int:
        alc.traces.flush()
        alc.traces._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return db.stat().st_size

    before = size()
    a = alc.ask("Quantos dias de férias por ano?", "handbook")
    t = alc.traces.get(a.trace_id)
    for i in range(10_000):
        alc.traces.record("handbook", "bench", f"{t.question} {i}",
                          answer={"answer": t.answer, "abstained": False,
                                  "citations": t.citations},
                          spans=t.spans, lineage=t.lineage, latency_ms=12.5)
    return (size() - before) / 1e6


def cached_p50(home: Path, requests: int = 300) -> float:
    port = free_port()
    env = {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_EMBEDDER": "hashing",
           "ALICERCE_GENERATOR": "smollm2-135m", "ALICERCE_ABSTAIN_BELOW": "0",
           "ALICERCE_MAX_TOKENS": "16", "ALICERCE_LLM_CONTEXT": "2048"}
    proc = subprocess.Popen([sys.executable, "-m", "alicerce", "serve", "--no-auth", "--port",
                             str(port), "--log-level", "warning"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(base + "/readyz", proc)
        with httpx.Client(base_url=base, timeout=120) as c:
            body = {"model": "handbook", "messages": [
                {"role": "user", "content": "Qual o prazo para enviar os comprovantes?"}]}
            for _ in range(10):  # fills the cache; refusals and abstentions are never cached
                first = c.post("/v1/chat/completions", json=body)
                first.raise_for_status()
                if not first.json()["alicerce"]["abstained"]:
                    break
            times = []
            for _ in range(requests):
                t0 = time.perf_counter()
                r = c.post("/v1/chat/completions", json=body)
                times.append(time.perf_counter() - t0)
                assert r.json()["alicerce"]["cached"], r.text
        return statistics.median(times)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def fill(alc: Alicerce, rows: int) -> None:
    """`rows` traces straight into the table (the writer's row format), in batches."""
    alc.traces.flush()
    db = alc.traces._db
    have = db.execute("SELECT COUNT(*) FROM traces").fetchone()[0]
    template = list(db.execute("SELECT * FROM traces LIMIT 1").fetchone())
    cols = [d[1] for d in db.execute("PRAGMA table_info(traces)")]
    rnd = random.Random(7)
    now = time.time()
    idx = {c: i for i, c in enumerate(cols)}
    batch: list[tuple[object, ...]] = []
    feedback: list[tuple[object, ...]] = []
    for i in range(have, rows):
        row = list(template)
        row[idx["id"]] = f"{i:024x}"
        row[idx["at"]] = now - rnd.random() * 30 * 86400
        row[idx["app"]] = f"app{rnd.randrange(20)}"
        row[idx["app_version"]] = rnd.randrange(1, 6)
        row[idx["caller"]] = f"key{rnd.randrange(50)}"
        row[idx["status"]] = "error" if rnd.random() < 0.02 else "ok"
        batch.append(tuple(row))
        if rnd.random() < 0.01:
            feedback.append((row[idx["id"]], now, rnd.choice((1, -1)), "", "bench", None, ""))
        if len(batch) == 20_000:
            _insert(alc, cols, batch, feedback)
            batch, feedback = [], []
    if batch:
        _insert(alc, cols, batch, feedback)


def _insert(alc: Alicerce, cols: list[str], rows: list[tuple[object, ...]],
            feedback: list[tuple[object, ...]]) -> None:
    with transaction(alc.traces._db) as db:
        db.executemany(f"INSERT INTO traces ({', '.join(cols)}) VALUES "
                       f"({', '.join('?' * len(cols))})", rows)
        db.executemany("INSERT INTO feedback (trace_id, at, score, comment, caller, rating, "
                       "reference) VALUES (?, ?, ?, ?, ?, ?, ?)", feedback)


def timed(fn: object, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--home", default="/tmp/alicerce-bench-traces")
    args = ap.parse_args()
    home = Path(args.home)
    shutil.rmtree(home, ignore_errors=True)
    print(f"machine: {machine()}")
    alc = sample(home)
    costs = overhead(alc)
    db = home / "alicerce.db"
    grown = growth(alc, db)
    alc.close()
    cached = cached_p50(home)
    print(f"cached answer p50 {ms(cached)} (live server, client side)")
    for kind, (put, write) in costs.items():
        total = put + write
        print(f"overhead, {kind} trace: record() {ms(put)} on the request thread "
              f"({100 * put / cached:.2f}% of a cached answer) + writer thread {ms(write)} = "
              f"{ms(total)} (target <= 2 ms: {total * 1000 / 2:.3f}x of it; "
              f"{100 * total / cached:.2f}% of a cached answer, target <= 3%: "
              f"{total / cached / 0.03:.3f}x of it)")
    print(f"growth: {grown:.2f} MB per 10,000 traces")
    alc = Alicerce(Settings.load(home=home, embedder="hashing"))
    t0 = time.perf_counter()
    fill(alc, args.rows)
    n = alc.traces.count()
    print(f"filled to {n:,} traces in {time.perf_counter() - t0:.0f} s; database "
          f"{db.stat().st_size / 1e9:.2f} GB")
    f = alc.traces.find
    cases = {
        "newest 50, no filter": lambda: f(),
        "--app app3": lambda: f(app="app3"),
        "--app app3 --since 1h": lambda: f(app="app3", since_s=3600),
        "--app app3 --feedback down": lambda: f(app="app3", feedback="down"),
        "--feedback none --app app3": lambda: f(app="app3", feedback="none"),
        "--status error": lambda: f(status="error"),
        "--app app3 --version 2 --status error": lambda: f(app="app3", app_version=2,
                                                           status="error"),
        "caller (a key's own, HTTP)": lambda: f(caller="key7"),
    }
    worst = 0.0
    for name, fn in cases.items():
        s = timed(fn)
        worst = max(worst, s)
        print(f"  find {name:<40} {ms(s):>12}  ({len(fn())} rows)")
    print(f"slowest filter {ms(worst)} (target < 200 ms: {worst * 1000 / 200:.3f}x of it)")
    alc.close()
    env = {**os.environ, "ALICERCE_HOME": str(home), "ALICERCE_EMBEDDER": "hashing"}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "alicerce", "traces", "list", "--app", "app3",
                    "--feedback", "down", "--json"], env=env, check=True,
                   capture_output=True)
    print(f"CLI `alicerce traces list --app app3 --feedback down` wall "
          f"{ms(time.perf_counter() - t0)} (Python start-up and imports included)")


if __name__ == "__main__":
    main()
