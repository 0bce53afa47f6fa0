"""Groundedness check against labels: does `triad.groundedness` tell an answer supported by
its passage from one that is not?

Labels are built from Pirá 2.0's human answers (Portuguese, abstractive): an answerable
question's answer with its own abstract is *grounded*; the same answer with the abstract of
another question is *not grounded*. People wrote and validated the answers against their
abstracts; the pairing into unsupported cases is ours. A score >= 0.5 counts as grounded.

    python bench/grounding.py [--n 100] [--judged 20] [--model qwen-1.5b] [--data ...]
"""

from __future__ import annotations

import argparse
import csv
import random
import tempfile
import time

from common import data_dir, machine

from alicerce import Alicerce, Settings
from alicerce.evaluate.stats import accuracy, cohen_kappa
from alicerce.metrics.grounding import check
from alicerce.metrics.judges import Judge


def pairs(base: str, n: int) -> list[tuple[str, str, bool]]:
    with open(base, encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh)
                if r["at_labels"] and float(r["at_labels"]) == 1.0 and r["answer_pt_origin"]
                and r["abstract_translated_pt"]]
    rng = random.Random(0)
    rng.shuffle(rows)
    chosen, pool = rows[:n], rows[n:]  # not-grounded pairs borrow abstracts from the pool
    out = []
    for i, r in enumerate(chosen):
        if i % 2 == 0:
            out.append((r["answer_pt_origin"], r["abstract_translated_pt"], True))
            continue
        other = next(o["abstract_translated_pt"] for o in pool[i:] + pool
                     if o["abstract_translated_pt"] != r["abstract_translated_pt"])
        out.append((r["answer_pt_origin"], other, False))
    return out


def report(name: str, truth: list[bool], scores: list[float], secs: float) -> None:
    pred = [s >= 0.5 for s in scores]
    t, p = [str(x) for x in truth], [str(x) for x in pred]
    mean_g = sum(s for s, g in zip(scores, truth, strict=True) if g) / max(1, sum(truth))
    mean_u = sum(s for s, g in zip(scores, truth, strict=True) if not g) / max(
        1, len(truth) - sum(truth))
    print(f"{name}: accuracy {accuracy(t, p):.3f}, kappa {cohen_kappa(t, p):.3f}; mean score "
          f"grounded {mean_g:.3f} vs not {mean_u:.3f}; {secs / len(truth) * 1000:.0f} ms each "
          f"({len(truth)} answers)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--judged", type=int, default=20)
    ap.add_argument("--model", default="qwen-1.5b")
    args = ap.parse_args()
    data = pairs(str(data_dir(args.data, "pt-pira") / "test.csv"), args.n)
    print(f"# {machine()}; Pirá test, {sum(g for *_, g in data)} grounded + "
          f"{sum(not g for *_, g in data)} not")
    started = time.perf_counter()
    scores = [check(a, [ctx]).score for a, ctx, _ in data]
    report("checks only (numbers, names, words)", [g for *_, g in data], scores,
           time.perf_counter() - started)
    if args.judged:
        with tempfile.TemporaryDirectory() as home:
            alc = Alicerce(Settings.load(home=home))
            judge = Judge(alc.generator(args.model), alc.prompts.get)
            sub = data[: args.judged]
            started = time.perf_counter()
            results = [check(a, [ctx], judge) for a, ctx, _ in sub]
            secs = time.perf_counter() - started
            truth = [g for *_, g in sub]
            report(f"checks + {args.model} judge", truth, [r.score for r in results], secs)
            report(f"{args.model} judge alone", truth,
                   [r.judge.score if r.judge else 0.0 for r in results], secs)
            report("checks alone, same rows", truth,
                   [check(a, [ctx]).score for a, ctx, _ in sub], 0.0)
            alc.close()


if __name__ == "__main__":
    main()
