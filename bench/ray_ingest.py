"""Ingestion throughput with its embedding on a Ray cluster: 1 versus 2 workers, against
the same ingest in one process. The cluster is one node on this machine (`ray start --head`,
2 CPUs), so the figures show what Ray costs and how the work divides, not more hardware.

    python bench/ray_ingest.py [--data ../shared/data] [--limit 400]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import data_dir, machine, ray_cluster

from alicerce import Alicerce, Settings
from alicerce.embed import get_embedder, ray_pool


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--limit", type=int, default=400, help="documents of the Zoomcamp FAQ")
    args = ap.parse_args()
    base = data_dir(args.data, "llm-zoomcamp-faq/search_evaluation")
    work = Path(tempfile.mkdtemp(prefix="alicerce-ray-"))
    docs = json.loads((base / "documents-with-ids.json").read_text())[: args.limit]
    corpus = work / "faq.json"
    corpus.write_text(json.dumps(docs))
    with ray_cluster() as address:
        print(f"machine: {machine()}; {len(docs)} Zoomcamp FAQ documents, e5-small; a one-node "
              "Ray cluster on this machine")
        print(f"{'run':<22}{'chunks':>8}{'seconds':>9}{'chunks/s':>10}")
        runs = [("one process", "", 1), ("ray, 1 worker", address, 1),
                ("ray, 2 workers", address, 2)]
        for name, executor, workers in runs:
            settings = Settings.load(home=work / name.replace(" ", "-").replace(",", ""),
                                     executor=executor, executor_workers=workers)
            with Alicerce(settings) as alc:
                pool = ray_pool.on_cluster(get_embedder("e5-small", settings), "e5-small",
                                           settings) if executor else None
                if pool:  # workers load the model before the clock starts
                    pool.embed_passages(["warm-up"])
                t = time.perf_counter()
                rep = alc.ingest([corpus], "faq", id_field="id", title_field="question")
                took = time.perf_counter() - t
                if pool:  # its cores go back to the cluster for the next run
                    pool.close()
            print(f"{name:<22}{rep.chunks_embedded:>8}{took:>9.1f}"
                  f"{rep.chunks_embedded / took:>10.1f}", flush=True)


if __name__ == "__main__":
    main()
