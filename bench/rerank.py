"""Reranking: what an LLM reranker (and a cross-encoder, given local weights) gains over
fusion alone, and what it costs per query (issue 17).

    python bench/rerank.py --set zoomcamp --limit 100 [--model qwen-0.5b] [--candidates 20]
    python bench/rerank.py --set scifact --limit 50 [--cross-encoder PATH]
    python bench/rerank.py --set scifact --mode sparse --embedder hashing   # no embedding pass

Candidates are the search's top --candidates (hybrid by default; its order is the
baseline). `--mode sparse --embedder hashing` skips the embedding pass (SciFact's takes
over an hour on 2 cores) and reorders BM25's candidates instead;
the LLM reranker (`rerank` step, `reranker: llm`, prompt rerank-relevance) scores each
candidate by P(yes) from the first token's log-probabilities, and the top 10 are scored.
Zoomcamp: filter by course, relevant = the question's document (hit rate@5, MRR@5,
nDCG@10). SciFact: the test qrels (nDCG@10, recall@10). Printed per reranker: the metrics,
their ratio to fusion's, and the time per query.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from common import data_dir, machine

from alicerce import Alicerce
from alicerce.retrieve.rerankers import CrossEncoderReranker, LlmReranker
from alicerce.types import Hit

Query = tuple[str, frozenset[str], dict[str, str]]


def zoomcamp(alc: Alicerce, base: Path, limit: int) -> tuple[str, list[Query]]:
    base = base / "llm-zoomcamp-faq/search_evaluation"
    alc.ingest([base / "documents-with-ids.json"], "zoomcamp", id_field="id",
               title_field="question", metadata_fields="course,section")
    with (base / "ground-truth-data.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[::max(1, 4627 // limit)][:limit]  # spread, not the head
    return "zoomcamp", [(r["question"], frozenset([r["document"]]), {"course": r["course"]})
                        for r in rows]


def scifact(alc: Alicerce, base: Path, limit: int) -> tuple[str, list[Query]]:
    base = base / "beir-scifact"
    alc.ingest([base / "corpus.jsonl"], "scifact", id_field="_id", title_field="title",
               chunk_tokens=480)
    relevant: dict[str, set[str]] = defaultdict(set)
    with (base / "qrels" / "test.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            if int(row["score"]) > 0:
                relevant[row["query-id"]].add(row["corpus-id"])
    texts = {json.loads(x)["_id"]: json.loads(x)["text"]
             for x in (base / "queries.jsonl").read_text().splitlines()}
    return "scifact", [(texts[q], frozenset(d), {}) for q, d in sorted(relevant.items())][:limit]


def metrics(ranked: Sequence[str], relevant: frozenset[str]) -> dict[str, float]:
    ranks = [i for i, d in enumerate(ranked[:10], 1) if d in relevant]
    dcg = sum(1 / math.log2(r + 1) for r in ranks)
    ideal = sum(1 / math.log2(i + 1) for i in range(1, min(len(relevant), 10) + 1))
    first = ranks[0] if ranks else 0
    return {"hit@5": float(0 < first <= 5), "mrr@5": 1 / first if 0 < first <= 5 else 0.0,
            "ndcg@10": dcg / ideal, "recall@10": len(ranks) / len(relevant)}


def docs(hits: Sequence[Hit]) -> list[str]:
    return list(dict.fromkeys(h.doc_key for h in hits))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data")
    ap.add_argument("--set", choices=("zoomcamp", "scifact"), default="zoomcamp")
    ap.add_argument("--home", default="")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--model", default="qwen-0.5b")
    ap.add_argument("--cross-encoder", default="", help="a local CrossEncoder folder")
    ap.add_argument("--mode", default="hybrid", choices=("hybrid", "sparse", "dense"))
    ap.add_argument("--embedder", default="", help="e.g. hashing: no embedding pass")
    args = ap.parse_args()
    base = data_dir(args.data, "llm-zoomcamp-faq").parent
    home = args.home or f"/tmp/alicerce-bench-rerank-{args.set}" + (
        f"-{args.embedder}" if args.embedder else "")
    alc = Alicerce.open(home, **({"embedder": args.embedder} if args.embedder else {}))
    name, queries = (zoomcamp if args.set == "zoomcamp" else scifact)(alc, base, args.limit)
    candidates = [alc.search(q, name, mode=args.mode, k=args.candidates, filters=f or None)
                  for q, _, f in queries]
    rerankers: dict[str, Callable[[str, list[str]], list[float]] | None] = {
        "fusion" if args.mode == "hybrid" else args.mode: None}
    rerankers[f"llm {args.model}"] = LlmReranker(alc.generator(args.model),
                                                 alc.prompts.get("rerank-relevance")).scores
    if args.cross_encoder:
        rerankers["cross-encoder"] = CrossEncoderReranker(args.cross_encoder).scores
    print(machine())
    print(f"{name}: {len(queries)} queries, {args.candidates} {args.mode} candidates each")
    base_scores: dict[str, float] = {}
    for label, score in rerankers.items():
        total: dict[str, float] = defaultdict(float)
        t0 = time.perf_counter()
        for (q, rel, _), hits in zip(queries, candidates, strict=True):
            if score is not None:
                s = score(q, [h.text for h in hits])
                hits = [h for _, h in sorted(zip(s, hits, strict=True), key=lambda x: -x[0])]
            for k, v in metrics(docs(hits), rel).items():
                total[k] += v / len(queries)
        per_q = (time.perf_counter() - t0) / len(queries) * 1000
        base_scores = base_scores or dict(total)
        shown = "  ".join(f"{k} {v:.3f} ({v / base_scores[k]:.2f}x)" if base_scores[k]
                          else f"{k} {v:.3f}" for k, v in total.items())
        print(f"  {label:<18} {shown}  {per_q:8.0f} ms/query", flush=True)
    alc.close()


if __name__ == "__main__":
    main()
