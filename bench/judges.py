"""Judge agreement: our answer judge (prompt `judge-answer`, grammar-forced JSON) on the LLM
Zoomcamp's 150 judge-labelled answers, against the labels there (gpt-4o-mini as judge, AQA:
it saw the question, the reference answer and the generated answer).

The labelled rows are `results-gpt4o-mini.csv` sampled with pandas `sample(n=150,
random_state=1)`, as the course did (MANIFEST.md). The labels are another model's, not
people's: agreement says how close a bundled local judge comes to gpt-4o-mini's.

    python bench/judges.py --models qwen-1.5b,qwen-0.5b [--n 150] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter

import pandas as pd
from common import data_dir, machine

from alicerce import Alicerce, Settings
from alicerce.evaluate.stats import accuracy, cohen_kappa
from alicerce.generate.params import DecodingParams
from alicerce.metrics.judges import Judge
from alicerce.prompts.judges import RELEVANCE_LABELS
from alicerce.types import Message


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="qwen-1.5b")
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--data")
    args = ap.parse_args()
    base = data_dir(args.data, "llm-zoomcamp-rag-answers") / "2025"
    rows = pd.read_csv(base / "results-gpt4o-mini.csv").sample(n=150, random_state=1)
    truth = pd.read_csv(base / "evaluations-aqa.csv")["Relevance"].tolist()
    rows, truth = rows.iloc[: args.n], truth[: args.n]
    print(f"# {machine()}; {len(truth)} rows; gpt-4o-mini labels: {dict(Counter(truth))}")
    with tempfile.TemporaryDirectory() as home:
        alc = Alicerce(Settings.load(home=home))
        for model in args.models.split(","):
            judge = Judge(alc.generator(model), alc.prompts.get)
            judge.gen.complete([Message("user", "hi")], DecodingParams(max_tokens=1))  # load
            labels, failed, started, tokens = [], 0, time.perf_counter(), 0
            for r in rows.itertuples():
                try:
                    v = judge.answer(r.question, r.answer_llm, r.answer_orig)
                    labels.append(v.label)
                    tokens += v.tokens
                except Exception as exc:  # counted and reported: a judge failure is a result
                    print(f"  row failed: {exc}")
                    labels.append("FAILED")
                    failed += 1
            secs = time.perf_counter() - started
            binary = ["RELEVANT" if t == "RELEVANT" else "NOT" for t in truth]
            binary_ours = ["RELEVANT" if p == "RELEVANT" else "NOT" for p in labels]
            confusion = Counter(zip(truth, labels, strict=True))
            print(f"{model}: accuracy {accuracy(truth, labels):.3f}, Cohen's kappa "
                  f"{cohen_kappa(truth, labels):.3f} (3 labels); RELEVANT vs not: accuracy "
                  f"{accuracy(binary, binary_ours):.3f}, kappa "
                  f"{cohen_kappa(binary, binary_ours):.3f}; failed {failed}; "
                  f"{secs / len(truth):.2f} s/judgement, {tokens / len(truth):.0f} tokens")
            print(f"  ours: {dict(Counter(labels))}")
            for t in RELEVANCE_LABELS:
                print(f"  gpt-4o-mini {t:<16} -> " + ", ".join(
                    f"{p} {confusion[(t, p)]}" for p in (*RELEVANCE_LABELS, "FAILED")
                    if confusion[(t, p)]))
        alc.close()


if __name__ == "__main__":
    main()
