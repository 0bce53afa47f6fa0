"""BEIR SciFact test split (300 queries): nDCG@10 per search mode versus published anchors.

Anchors: BM25 0.665-0.687, all-MiniLM-L6-v2 0.645, bge-small-en-v1.5 0.713; target hybrid
>= 0.72. Each abstract is one document (title + text); the embedder sees up to 512 tokens.

    python bench/scifact.py [--data ../shared/data] [--home /tmp/sf] [--embedder e5-small]
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections import defaultdict
from pathlib import Path

from common import data_dir, machine, ratio

from alicerce import Alicerce
from alicerce.evaluate.retrieval import EvalQuery
from alicerce.types import IngestReport

ANCHOR_BM25, ANCHOR_BGE, TARGET = 0.687, 0.713, 0.72


def ingest(alc: Alicerce, base: Path) -> IngestReport:
    return alc.ingest([base / "corpus.jsonl"], "scifact", id_field="_id", title_field="title",
                      progress=lambda r: print(f"  {r.chunks_embedded} chunks", flush=True)
                      if r.chunks_embedded % 640 == 0 else None)


def load_queries(base: Path) -> list[EvalQuery]:
    """The test queries with their relevant abstracts (qrels score > 0)."""
    relevant: dict[str, set[str]] = defaultdict(set)
    with (base / "qrels" / "test.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if int(row["score"]) > 0:
                relevant[row["query-id"]].add(row["corpus-id"])
    texts = {}
    with (base / "queries.jsonl").open() as fh:
        for line in fh:
            q = json.loads(line)
            texts[q["_id"]] = q["text"]
    return [EvalQuery(texts[qid], frozenset(docs)) for qid, docs in sorted(relevant.items())]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--home", default="/tmp/alicerce-bench-scifact")
    ap.add_argument("--embedder", default="e5-small")
    ap.add_argument("--chunk-tokens", type=int, default=480)
    ap.add_argument("--alphas", default="0.3,0.5,0.7")
    args = ap.parse_args()
    base = data_dir(args.data, "beir-scifact")
    alc = Alicerce.open(args.home, embedder=args.embedder, chunk_tokens=args.chunk_tokens)
    t = time.perf_counter()
    rep = ingest(alc, base)
    print(f"machine: {machine()}; embedder {args.embedder}")
    print(f"ingest: {rep.added + rep.updated} docs new/changed, {rep.unchanged} unchanged, "
          f"{rep.chunks_embedded} chunks embedded in {time.perf_counter() - t:.0f}s")
    queries = load_queries(base)
    print(f"{len(queries)} test queries")
    print(f"{'mode':<14}{'nDCG@10 (ratio to bge-small 0.713)':<38}{'recall@10':>10}"
          f"{'MRR@10':>8}{'q/s':>8}")
    modes: list[tuple[str, float | None]] = [("sparse", None), ("dense", None)]
    modes += [("hybrid", float(a)) for a in args.alphas.split(",")] + [("rrf", None)]
    for mode, alpha in modes:
        r = alc.evaluate_retrieval("scifact", queries, k=10, mode=mode, alpha=alpha)  # type: ignore[arg-type]
        m = r.metrics
        name = mode + (f" a={alpha}" if alpha is not None else "")
        print(f"{name:<14}{ratio(m['ndcg@10'], ANCHOR_BGE):<38}{m['recall@10']:>10.3f}"
              f"{m['mrr']:>8.3f}{r.queries / r.seconds:>8.1f}", flush=True)
    print(f"anchors: BM25 {ANCHOR_BM25}, bge-small {ANCHOR_BGE}, target hybrid >= {TARGET}")
    alc.close()


if __name__ == "__main__":
    main()
