"""Batch throughput with the rows on a Ray cluster: 1 versus 2 workers, against the same
job in one process. The cluster is one node on this machine (`ray start --head`, 2 CPUs;
each worker reserves one and runs its models on one thread), so the figures show what Ray
costs and how the work divides, not more hardware.

    python bench/ray_batch.py [--rows 24] [--app examples/chains/review-sentiment.yaml]

Rows are the sample reviews in examples/chains/reviews.jsonl, cycled to --rows. Every run
is `alicerce batch run`'s code path (the runner, a trace per row, a line per row appended
to the output) after a warm-up row per worker that loads the models.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import machine, ray_cluster

from alicerce import Alicerce, Settings
from alicerce.batch.ray_rows import on_cluster
from alicerce.batch.runner import runner

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--app", default=str(ROOT / "examples/chains/review-sentiment.yaml"))
    args = ap.parse_args()
    reviews = [json.loads(x)["inputs"]["text"]
               for x in (ROOT / "examples/chains/reviews.jsonl").read_text().splitlines()]
    work = Path(tempfile.mkdtemp(prefix="alicerce-ray-batch-"))
    src = work / "rows.jsonl"
    src.write_text("".join(json.dumps({"text": reviews[i % len(reviews)]},
                                      ensure_ascii=False) + "\n" for i in range(args.rows)))
    home = work / "home"
    one = 0.0
    with ray_cluster() as address:
        print(f"machine: {machine()}; {args.rows} rows of {Path(args.app).name}; a one-node "
              "Ray cluster on this machine")
        print(f"{'run':<22}{'rows':>6}{'seconds':>9}{'rows/min':>10}{'vs 1 worker':>13}")
        runs = [("one process", "", 1), ("ray, 1 worker", address, 1),
                ("ray, 2 workers", address, 2)]
        for name, executor, workers in runs:
            settings = Settings.load(home=home, embedder="hashing", executor=executor,
                                     executor_workers=workers)
            with Alicerce(settings) as alc:
                version, _ = alc.deploy_app(Path(args.app))
                warm = {"text": reviews[0]}
                pool = on_cluster(settings) if executor else None
                if pool:  # every worker loads the models before the clock starts
                    for n in range(workers):
                        pool.run(n, version.ref, warm, "local", "bench")
                else:
                    alc.chains.run(version, warm)
                job = alc.batches.create("local", version.name, version.version, src,
                                         work / f"{name.replace(' ', '-')}.jsonl", workers)
                t = time.perf_counter()
                done = runner(alc).run(job)
                took = time.perf_counter() - t
                if pool:
                    pool.close()
            rate = done.succeeded / took * 60
            one = rate if workers == 1 and executor else one
            vs = f"{rate / one:.2f}x" if executor and one else ""
            print(f"{name:<22}{done.succeeded:>6}{took:>9.1f}{rate:>10.1f}{vs:>13}",
                  flush=True)


if __name__ == "__main__":
    main()
