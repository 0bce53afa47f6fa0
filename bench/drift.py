"""Drift detection: statistical power and false alarms on constructed shifts of real
questions, the cost of a drift run on 10k and 100k traces, and the cost of the server's
metrics per request.

    python bench/drift.py [--data ../shared/data] [--parts power,cost,metrics]
                          [--trials 20] [--n 200] [--shares 0,0.05,0.1,0.25,0.5,1]

- power: two pairs, each a baseline pool and a shift pool of real questions:
  LLM Zoomcamp ground truth, data-engineering-zoomcamp questions as the baseline and
  machine-learning-zoomcamp ones as the shift (a subtle shift: same kind of course FAQ), and
  FaQuAD (PT, questions on Brazilian university documents) against Pirá (PT, questions on the
  ocean and the Brazilian coast). Each trial draws n baseline questions and n current ones,
  a `share` of them from the shift pool and the rest from baseline questions the baseline
  sample did not use; share 0 is the no-shift control, whose flag rate is the false-alarm
  rate (anchor: the nominal alpha, 0.01). The e5 vectors come from the bundled embedder.
- cost: a home with 10k and 100k production traces in the last 24 h (Zoomcamp questions and
  FAQ answers, cycled), `Alicerce.drift(..., baseline="window:7d")` with 10k/100k in the
  baseline week too; first run (every sampled text embedded) and second (memoised).
- metrics: the server's per-answer metric updates (`Metrics.answered` + the request counter
  and latency histogram) timed over 100k answers, against a cached answer's 3.46 ms
  (docs/benchmarks.md, Serving) as the anchor; and the cost of one /metrics render.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from common import data_dir, machine

from alicerce import Alicerce, Settings
from alicerce.observe.drift import compare

ALPHA = 0.01
CACHED_ANSWER_MS = 3.46


def home_with(tmp: Path, collection: str) -> Alicerce:
    """A home whose one-document collection gives drift its embedder (the bundled e5)."""
    alc = Alicerce(Settings.load(home=tmp / "h"))
    docs = tmp / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Course\n\nThe course starts in January.\n")
    alc.ingest([docs], collection)
    return alc


def zoomcamp(base: Path) -> tuple[list[str], list[str]]:
    with (base / "search_evaluation" / "ground-truth-data.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by = {c: [r["question"] for r in rows if r["course"] == c]
          for c in ("data-engineering-zoomcamp", "machine-learning-zoomcamp")}
    return by["data-engineering-zoomcamp"], by["machine-learning-zoomcamp"]


def faquad_pira(faquad: Path, pira: Path) -> tuple[list[str], list[str]]:
    data = json.loads((faquad / "dataset.json").read_text(encoding="utf-8"))["data"]
    fq = [q["question"].strip() for a in data for p in a["paragraphs"] for q in p["qas"]]
    with (pira / "test.csv").open(encoding="utf-8") as f:
        pr = [r["question_pt_origin"].strip() for r in csv.DictReader(f)
              if r["question_pt_origin"].strip()]
    with (pira / "validation.csv").open(encoding="utf-8") as f:
        pr += [r["question_pt_origin"].strip() for r in csv.DictReader(f)
               if r["question_pt_origin"].strip()]
    return fq, pr


def power(alc: Alicerce, pairs: dict[str, tuple[list[str], list[str]]], trials: int, n: int,
          shares: list[float]) -> None:
    embedder = alc.embedder_for(alc.store.collection("probe"))  # type: ignore[arg-type]
    print(f"\n## Power and false alarms ({trials} trials per cell, n = {n} per side, "
          f"alpha {ALPHA})\n")
    print("| pair | " + " | ".join(f"shift {s:.0%}" for s in shares) + " |")
    print("|---|" + "---|" * len(shares))
    for name, (pool_a, pool_b) in pairs.items():
        rng = random.Random(0)
        a = rng.sample(sorted(set(pool_a)), min(len(set(pool_a)), 3 * n))
        b = rng.sample(sorted(set(pool_b)), min(len(set(pool_b)), 2 * n))
        t0 = time.perf_counter()
        va = dict(zip(a, alc.drift_runs.vectors(embedder, a, "query"), strict=True))
        vb = dict(zip(b, alc.drift_runs.vectors(embedder, b, "query"), strict=True))
        embed_s = time.perf_counter() - t0
        cells, mmd_cells = [], []
        for share in shares:
            flagged = mmd_only = 0
            for t in range(trials):
                r = random.Random(1000 * t + int(share * 100))
                shuffled = r.sample(a, len(a))
                base, rest = shuffled[:n], shuffled[n:]
                k = round(share * n)
                cur = r.sample(rest, n - k) + r.sample(b, k)
                side = compare("input", base, cur, np.array([va[x] for x in base]),
                               np.array([va.get(x, vb.get(x)) for x in cur]), alpha=ALPHA,
                               seed=t)
                flagged += side.drifted
                mmd_only += bool(side.test("embedding_mmd").flagged)  # type: ignore[union-attr]
            cells.append(f"{flagged / trials:.2f}")
            mmd_cells.append(f"{mmd_only / trials:.2f}")
        print(f"| {name} (any test) | " + " | ".join(cells) + " |")
        print(f"| {name} (MMD alone) | " + " | ".join(mmd_cells) + " |")
        if shares[0] == 0:
            fa = float(cells[0])
            print(f"|   false-alarm rate {fa:.2f} = {fa / ALPHA:.1f}x the nominal {ALPHA} "
                  f"(embedding {len(a) + len(b)} questions: {embed_s:.1f} s) |" +
                  " |" * (len(shares) - 1))


def cost(base: Path, sizes: list[int]) -> None:
    docs = json.loads((base / "search_evaluation" / "documents-with-ids.json")
                      .read_text(encoding="utf-8"))
    qs, _ = zoomcamp(base)
    qs += [d["question"] for d in docs]
    answers = [d["text"] for d in docs]
    print("\n## Cost of a drift run (window:7d vs 24h, sample 500 per side, both sides)\n")
    print("| traces per window | first run s | memoised run s | texts embedded |")
    print("|---|---|---|---|")
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            alc = home_with(Path(tmp), "zoom")
            now = time.time()
            rng = random.Random(size)
            for i in range(2 * size):
                at = now - rng.uniform(0, 86400) if i < size else \
                    now - 86400 - rng.uniform(0, 7 * 86400)
                q = qs[i % len(qs)] + ("" if i < len(qs) else f" ({i // len(qs)})")
                alc.traces.record("zoom", "k1", q, at=at, answer={
                    "answer": answers[i % len(answers)], "abstained": False, "citations": [],
                    "versions": {}, "usage": {}, "timings": {}})
                if i % 5000 == 4999:  # the trace queue holds 10,000: let the writer drain
                    alc.traces.flush()
            alc.traces.flush()
            t0 = time.perf_counter()
            first = alc.drift("zoom", "window:7d", "24h")
            t1 = time.perf_counter()
            alc.drift("zoom", "window:7d", "24h")
            t2 = time.perf_counter()
            n_embedded = sum(min(500, s.n_baseline) + min(500, s.n_current)
                             for s in first.sides)
            print(f"| {size:,} | {t1 - t0:.1f} | {t2 - t1:.1f} | {n_embedded} |")
            alc.close()


def metrics_cost() -> None:
    from alicerce.server.metrics import Metrics
    from alicerce.types import Answer, Hit, Usage

    m = Metrics()
    hits = tuple(Hit(i, f"d{i}", 0.5, "t", "", "", None, "", {}, {"dense": 0.8, "sparse": 3.0})
                 for i in range(6))
    verdicts = tuple({"stage": s, "rail": r, "action": "allow", "latency_ms": 5.0}
                     for s, r in (("input", "injection"), ("input", "pii"),
                                  ("output", "toxicity"), ("output", "pii")))
    answer = Answer("q", "a", (), hits, False, "pt", Usage(100, 50), {}, {}, guards=verdicts)
    n = 100_000
    t0 = time.perf_counter()
    for i in range(n):
        app = f"app{i % 5}"
        m.answered(app, 1, answer)
        m.requests.labels("/v1/chat/completions", app, "200").inc()
        m.latency.labels("/v1/chat/completions", app).observe(1.5)
        m.tokens.labels(app, "in").inc(100)
        m.tokens.labels(app, "out").inc(50)
    per = (time.perf_counter() - t0) / n * 1000
    t0 = time.perf_counter()
    body = m.render()
    render_ms = (time.perf_counter() - t0) * 1000
    print("\n## Metrics cost per request\n")
    print(f"- per answer (outcome, retrieval, 4 guard verdicts, request counter, latency, "
          f"tokens): {per * 1000:.1f} µs = {per / CACHED_ANSWER_MS:.2%} of a cached answer "
          f"({CACHED_ANSWER_MS} ms), the cheapest request")
    print(f"- one /metrics render with 5 apps: {render_ms:.1f} ms, {len(body) / 1024:.0f} KiB")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data")
    p.add_argument("--parts", default="power,cost,metrics")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--shares", default="0,0.05,0.1,0.25,0.5,1")
    p.add_argument("--sizes", default="10000,100000")
    args = p.parse_args()
    parts = args.parts.split(",")
    print(f"# Drift and monitoring benchmarks ({machine()})")
    zoom = data_dir(args.data, "llm-zoomcamp-faq")
    if "power" in parts:
        with tempfile.TemporaryDirectory() as tmp:
            alc = home_with(Path(tmp), "probe")
            pairs = {"Zoomcamp DE → ML course": zoomcamp(zoom),
                     "FaQuAD → Pirá": faquad_pira(data_dir(args.data, "pt-faquad"),
                                                  data_dir(args.data, "pt-pira"))}
            power(alc, pairs, args.trials, args.n, [float(s) for s in args.shares.split(",")])
            alc.close()
    if "cost" in parts:
        cost(zoom, [int(s) for s in args.sizes.split(",")])
    if "metrics" in parts:
        metrics_cost()


if __name__ == "__main__":
    main()
