"""The console's server-side time and weight.

    python bench/console.py [--rows 100000,1000000] [--home /tmp/alicerce-bench-console]

- Trace list and trace view: the table is filled to each `--rows` count with real answer
  traces (bench/traces.py's fill: 20 apps, 50 callers, 2% errors, 1% with feedback), and
  each console page is rendered in-process (FastAPI's TestClient: routing, the session
  check, the query, Jinja2; no network), 30 times after a warm-up; p50 and p99. Target:
  p50 <= 200 ms.
- Comparison: two stored 1,000-row runs compared, row by row, on the console page (its
  first 100 rows shown) and through GET /v1/evals/{a}/compare/{b}.
- Weight: bytes of each page's HTML, and of the assets a first visit loads (CSS, htmx,
  uPlot, console.js), raw and gzip -9 (what a proxy that compresses would send).
"""

from __future__ import annotations

import argparse
import gzip
import random
import re
import shutil
import statistics
import time
from pathlib import Path

from common import machine
from fastapi.testclient import TestClient
from traces import fill, sample

from alicerce import Alicerce
from alicerce.evaluate.runs import RowResult, Run, summarise
from alicerce.server import create_app

TARGET_MS = 200.0


def timed(client: TestClient, url: str, runs: int = 30) -> tuple[float, float, int]:
    """(p50 ms, p99 ms, bytes) of GET `url`, after one warm-up request."""
    first = client.get(url)
    assert first.status_code == 200, (url, first.status_code, first.text[:300])
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = client.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))], \
        len(first.content)


def sign_in(client: TestClient, key: str) -> None:
    form = client.get("/console/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf
    r = client.post("/console/login", data={"csrf": csrf.group(1), "key": key},
                    follow_redirects=False)
    assert r.status_code == 303


def runs_of(alc: Alicerce, n: int = 1000) -> tuple[str, str]:
    """Two stored runs of `n` rows with per-row scores, answers and trace ids."""
    rnd = random.Random(3)
    ids = []
    for which in ("a", "b"):
        results = [RowResult(f"r{i}", f"Pergunta {i} sobre reembolso?",
                             f"Resposta {which} {i} [1].", f"{i:024x}",
                             {"answer.f1": rnd.random(), "answer.rougeL": rnd.random(),
                              "retrieval.hit_rate": float(rnd.random() > 0.1)})
                   for i in range(n)]
        run = Run(alc.evals.runs.new_id(), time.time(), "run", "app1", 1 if which == "a" else 2,
                  "bench", "golden", "v1", ["retrieval", "answer"], "",
                  summarise(results), results, 1.0, {})
        run.count()
        alc.evals.runs.save(run)
        ids.append(run.id)
    return ids[0], ids[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="100000,1000000")
    ap.add_argument("--home", default="/tmp/alicerce-bench-console")
    ap.add_argument("--fresh", action="store_true", help="start from an empty home")
    args = ap.parse_args()
    home = Path(args.home)
    if args.fresh and home.exists():
        shutil.rmtree(home)
    alc = sample(home)
    alc.ask("Qual o prazo para enviar os comprovantes?", "handbook")  # fill() copies it
    alc.traces.flush()
    _, admin = alc.keys.create("bench", ["admin"], rpm=10**6, tpm=10**9)
    print(f"# console, {machine()}")
    with TestClient(create_app(alc.settings, alc)) as client:
        sign_in(client, admin)
        for rows in (int(r) for r in args.rows.split(",")):
            t0 = time.perf_counter()
            fill(alc, rows)
            filled = time.perf_counter() - t0
            alc.traces.flush()
            tid = alc.traces._db.execute(
                "SELECT id FROM traces ORDER BY at DESC LIMIT 1 OFFSET 777").fetchone()[0]
            pages = {"trace list, newest 50": "/console/traces",
                     "trace list, app filter": "/console/traces?app=app3",
                     "trace list, caller filter": "/console/traces?caller=key7",
                     "trace list, rated down": "/console/traces?feedback=down",
                     "trace list, errors": "/console/traces?status=error",
                     "trace list, a page deep": "/console/traces?before="
                     + str(alc.traces.find(limit=1000)[-1].at),
                     "trace view": f"/console/traces/{tid}",
                     "overview (recent traces, runs, queue size)": "/console",
                     "review queue": "/console/review"}
            print(f"\n## {rows:,} traces (filled in {filled:.0f} s)")
            print(f"| page | p50 | p99 | HTML | p50 / {TARGET_MS:.0f} ms |\n|---|---|---|---|---|")
            for name, url in pages.items():
                p50, p99, size = timed(client, url)
                print(f"| {name} | {p50:.1f} ms | {p99:.1f} ms | {size / 1024:.1f} KB | "
                      f"{p50 / TARGET_MS:.2f}x |")
        a, b = runs_of(alc)
        print("\n## comparing two 1,000-row runs")
        print("| what | p50 | p99 | bytes |\n|---|---|---|---|")
        for name, url in (("console page (100 rows shown)", f"/console/evals/compare?a={a}&b={b}"),
                          ("API, 100 rows", f"/v1/evals/{a}/compare/{b}"),
                          ("API, all 1,000 rows", f"/v1/evals/{a}/compare/{b}?limit=1000")):
            headers = {"Authorization": f"Bearer {admin}"} if url.startswith("/v1") else {}
            client.headers.update(headers)
            p50, p99, size = timed(client, url, runs=15)
            client.headers.pop("Authorization", None)
            print(f"| {name} | {p50:.1f} ms | {p99:.1f} ms | {size / 1024:.1f} KB |")
        print("\n## weight")
        assets = ["console.css", "uPlot.min.css", "htmx.min.js", "uPlot.iife.min.js",
                  "console.js"]
        raw = zipped = 0
        for name in assets:
            body = client.get(f"/console/static/{name}").content
            raw, zipped = raw + len(body), zipped + len(gzip.compress(body, 9))
        print(f"assets a first visit loads (once, cached 1 h): {raw / 1024:.1f} KB "
              f"({zipped / 1024:.1f} KB gzipped)")
        print("| page | HTML | gzipped |\n|---|---|---|")
        for url in ("/console", "/console/traces", f"/console/traces/{tid}",
                    "/console/evals", f"/console/evals/compare?a={a}&b={b}",
                    "/console/collections/handbook", "/console/ops"):
            body = client.get(url).content
            print(f"| {url.split('?')[0]} | {len(body) / 1024:.1f} KB | "
                  f"{len(gzip.compress(body, 9)) / 1024:.1f} KB |")
    alc.close()


if __name__ == "__main__":
    main()
