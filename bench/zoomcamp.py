"""LLM Zoomcamp FAQ retrieval: hit rate and MRR per search mode, versus the published anchors.

Protocol as in the course: 948 documents, 4,627 generated questions, filter by course,
top 5, relevant = same document id. Anchor: Elasticsearch hybrid + RRF 0.952 / 0.875.

    python bench/zoomcamp.py [--data ../shared/data] [--home /tmp/zc] [--limit N]
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from common import data_dir, machine, ratio

from alicerce import Alicerce
from alicerce.evaluate.retrieval import EvalQuery
from alicerce.types import IngestReport

ANCHOR_HIT, ANCHOR_MRR = 0.952, 0.875


def ingest(alc: Alicerce, base: Path) -> IngestReport:
    return alc.ingest([base / "documents-with-ids.json"], "zoomcamp", id_field="id",
                      title_field="question", metadata_fields="course,section")


def load_queries(base: Path, limit: int = 0) -> list[EvalQuery]:
    """The generated questions, each with its course as a filter."""
    with (base / "ground-truth-data.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if limit:
        rows = rows[:limit]
    return [EvalQuery(r["question"], frozenset([r["document"]]), {"course": r["course"]})
            for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--home", default="/tmp/alicerce-bench-zoomcamp")
    ap.add_argument("--embedder", default="e5-small")
    ap.add_argument("--limit", type=int, default=0, help="only the first N questions")
    ap.add_argument("--alphas", default="0.3,0.4,0.5,0.7")
    ap.add_argument("--modes", default="sparse,dense,hybrid,rrf")
    args = ap.parse_args()
    base = data_dir(args.data, "llm-zoomcamp-faq/search_evaluation")
    alc = Alicerce.open(args.home, embedder=args.embedder)
    t = time.perf_counter()
    report = ingest(alc, base)
    print(f"machine: {machine()}; embedder {args.embedder}")
    print(f"ingest: {report.added + report.updated} new/changed docs, {report.unchanged} "
          f"unchanged, {report.chunks_embedded} chunks embedded in {time.perf_counter() - t:.1f}s")
    queries = load_queries(base, args.limit)
    wanted = args.modes.split(",")
    modes: list[tuple[str, float | None]] = [(m, None) for m in ("sparse", "dense")
                                             if m in wanted]
    if "hybrid" in wanted:
        modes += [("hybrid", float(a)) for a in args.alphas.split(",")]
    if "rrf" in wanted:
        modes.append(("rrf", None))
    print(f"{len(queries)} questions, top 5, filter course")
    print(f"{'mode':<14}{'hit rate (ratio to 0.952)':<32}{'MRR (ratio to 0.875)':<30}"
          f"{'recall@5':>9}{'nDCG@10':>9}{'q/s':>8}")
    for mode, alpha in modes:
        rep = alc.evaluate_retrieval("zoomcamp", queries, k=5, mode=mode, alpha=alpha)  # type: ignore[arg-type]
        m = rep.metrics
        name = f"{mode}" + (f" a={alpha}" if alpha is not None else "")
        print(f"{name:<14}{ratio(m['hit_rate'], ANCHOR_HIT):<32}{ratio(m['mrr'], ANCHOR_MRR):<30}"
              f"{m['recall@5']:>9.3f}{m['ndcg@10']:>9.3f}{rep.queries / rep.seconds:>8.1f}")
    alc.close()


if __name__ == "__main__":
    main()
