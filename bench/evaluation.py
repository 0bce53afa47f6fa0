"""Evaluation runs through the product path (`Alicerce.evals.run`, what `alicerce eval run`
calls): the LLM Zoomcamp retrieval numbers reproduced, and the throughput of a run,
retrieval-only and with answers (and judges).

    python bench/evaluation.py [--data ../shared/data] [--home /tmp/alicerce-bench-zoomcamp]
        [--answers 10] [--judged 5] [--model qwen-1.5b]

The home is the one bench/zoomcamp.py fills (it ingests the 948 FAQ documents if needed).
"""

from __future__ import annotations

import argparse
import time

from common import data_dir, machine, ratio

from alicerce import Alicerce, datasets

ANCHOR_HIT, ANCHOR_MRR = 0.952, 0.875  # Elasticsearch hybrid + RRF, same protocol


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--home", default="/tmp/alicerce-bench-zoomcamp")
    ap.add_argument("--answers", type=int, default=10, help="rows answered (answer metrics)")
    ap.add_argument("--judged", type=int, default=5, help="rows answered and judged (triad)")
    ap.add_argument("--model", default="qwen-1.5b")
    args = ap.parse_args()
    faq = data_dir(args.data, "llm-zoomcamp-faq/search_evaluation")
    answers = data_dir(args.data, "llm-zoomcamp-rag-answers") / "2025/results-gpt4o-mini.csv"
    alc = Alicerce.open(args.home, embedder="e5-small", generator=args.model)
    alc.ingest([faq / "documents-with-ids.json"], "zoomcamp", id_field="id",
               title_field="question", metadata_fields="course,section")
    print(f"machine: {machine()}")

    ds = datasets.load(faq / "ground-truth-data.csv", filter_fields=["course"])
    run = alc.evals.run("zoomcamp", ds, ["retrieval"], cache=False)
    hit, mrr = run.summary["retrieval.hit_rate"], run.summary["retrieval.mrr"]
    print(f"retrieval ({run.id}, {run.rows} questions, {run.failed} failed): hit rate "
          f"{ratio(hit.mean, ANCHOR_HIT)} [{hit.low:.3f}-{hit.high:.3f}], MRR "
          f"{ratio(mrr.mean, ANCHOR_MRR)} [{mrr.low:.3f}-{mrr.high:.3f}]; "
          f"{run.rows / run.seconds * 60:.0f} questions/min")

    for n, groups in ((args.answers, ["retrieval", "answer"]),
                      (args.judged, ["retrieval", "answer", "triad", "judge"])):
        if not n:
            continue
        sample = datasets.load(answers, filter_fields=["course"], limit=n, sample_seed=1)
        started = time.perf_counter()
        run = alc.evals.run("zoomcamp", sample, groups, cache=False)
        secs = time.perf_counter() - started
        means = ", ".join(f"{m} {e.mean:.3f}" for m, e in run.summary.items()
                          if m.split(".")[1] in ("rougeL", "f1", "cosine", "correctness",
                                                 "groundedness", "context_relevance",
                                                 "answer_relevance", "hit_rate"))
        print(f"{'+'.join(groups)} ({run.id}, {run.rows} rows, {run.failed} failed, "
              f"{args.model}): {run.rows / secs * 60:.2f} questions/min "
              f"({secs / run.rows:.1f} s each); {means}")
    alc.close()


if __name__ == "__main__":
    main()
