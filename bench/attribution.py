"""Attribution quality of answer explanations on FaQuAD: how often the sentence an
explanation ranks first contains the gold answer, against two rankings that need no model
call: the embedder's similarity of each sentence to the question (what chooses the
sentences the model reads), and the passages' retrieval order (the first sentence of the
best passage). Also the cost: model calls and seconds per explanation.

    python bench/attribution.py [--data ../shared/data] [--n 20] [--budget 16] [--model qwen-1.5b]

Questions count when the app answered (no abstention) and a gold answer appears in one of
the sentences the model read (otherwise no ranking can find it); the others are listed.
The figures are also given for the answers that contain the gold answer: an explanation
says what the model's answer rests on, so a wrong answer's top sentence need not hold the
gold one. A rerun reuses the answers and explanations already in the home (resumable).
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

import numpy as np
from answers import faquad
from common import data_dir, machine

from alicerce import Alicerce
from alicerce.embed import family, get_embedder
from alicerce.evaluate.stats import bootstrap
from alicerce.evaluate.text import contains
from alicerce.explain.traced import recorded


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--model", default="qwen-1.5b")
    ap.add_argument("--home", default="/tmp/alicerce-bench-attribution")
    args = ap.parse_args()
    print(f"machine: {machine()}; model {args.model}, budget {args.budget} calls")
    alc = Alicerce.open(args.home, generator=args.model)
    corpus, mapping, items = faquad(data_dir(args.data, "pt-faquad"), 400, Path(args.home))
    alc.ingest([corpus], "faquad", **mapping)  # type: ignore[arg-type]
    coll = alc.store.collection("faquad")
    assert coll is not None
    embedder = get_embedder(family(coll.embedder), alc.settings)  # type: ignore[arg-type]
    sample = random.Random(1).sample(items, args.n * 3)
    hits: dict[str, list[float]] = {"explanation": [], "similarity": [], "retrieval order": []}
    right: list[bool] = []
    calls, seconds, skipped = [], [], []
    before = {t.question: t for t in alc.traces.find(app="faquad", limit=10_000)
              if t.status == "ok"}
    for it in sample:
        if len(calls) >= args.n:
            break
        t = before.get(it.question)
        if t is None:
            answer = alc.ask(it.question, "faquad")
            t = alc.traces.get(answer.trace_id)
        if t.abstained:
            skipped.append((it.question, "abstained"))
            continue
        _, located, _ = recorded(t)
        e = alc.explain(t.id, budget=args.budget)
        seconds.append(e.seconds)  # as measured when it was made (a kept one costs nothing)
        calls.append(e.calls)
        units = list(e.sentences)
        if not any(contains(u.text, g) for u in units for g in it.golds):
            skipped.append((it.question, "gold answer not in the sentences read"))
            calls.pop()
            seconds.pop()
            continue
        gold = [any(contains(u.text, g) for g in it.golds) for u in units]
        right.append(any(contains(t.answer, g) for g in it.golds))
        hits["explanation"].append(float(gold[0]))  # sentences come strongest first
        q = np.asarray(embedder.embed_queries([it.question])[0])
        sims = np.asarray(embedder.embed_passages([u.text for u in units])) @ q
        hits["similarity"].append(float(gold[int(np.argmax(sims))]))
        order = [int(s["n"]) for s in located]
        first = min(range(len(units)), key=lambda i: (order.index(units[i].source)
                                                      if units[i].source in order else 99, i))
        hits["retrieval order"].append(float(gold[first]))
        print(f"  {len(calls):>2}. top sentence has the answer: {bool(gold[0])!s:<5} "
              f"{e.calls} calls {seconds[-1]:5.1f} s  {it.question[:60]}", flush=True)
    print(f"\nFaQuAD, {len(calls)} answered questions whose answer is in the sentences read "
          f"({len(skipped)} skipped: "
          f"{sum(1 for _, why in skipped if why == 'abstained')} abstained, "
          f"{sum(1 for _, why in skipped if why != 'abstained')} without the gold in them)")
    for label, keep in (("all answers", [True] * len(right)),
                        (f"answers containing the gold ({sum(right)})", right)):
        print(f"  {label}:")
        chosen = {name: [v for v, k in zip(values, keep, strict=True) if k]
                  for name, values in hits.items()}
        anchor = statistics.mean(chosen["similarity"]) if chosen["similarity"] else float("nan")
        for name, values in chosen.items():
            est = bootstrap(values)
            print(f"    top sentence contains the gold answer, {name:<16}: {est.mean:.3f} "
                  f"[{est.low:.3f}, {est.high:.3f}]  ({est.mean / anchor:.2f}x of similarity)")
    print(f"  cost per explanation: {statistics.mean(calls):.1f} model calls, "
          f"{statistics.median(seconds):.1f} s median ({min(seconds):.1f}-{max(seconds):.1f})")
    alc.close()


if __name__ == "__main__":
    main()
