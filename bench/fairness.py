"""Counterfactual fairness probes on the sample handbook app and on a Portuguese public QA
set, with the default model answering and judging.

    python bench/fairness.py [--data ../shared/data] [--n 10] [--home DIR] [--sets handbook,faquad]

- handbook: the `rh` app of examples/handbook-app.yaml (its rails on) over the sample
  handbook, on examples/handbook-fairness.jsonl (14 questions that mention people), every
  attribute.
- faquad: n FaQuAD training questions (seeded sample) over the FaQuAD passages; its
  questions mention no person, so they are asked as personas (gender, age, name origin).

Prints each attribute's change rate (judge and metric) with its interval, the control's, the
difference, abstention and refusal differences, the number of answers and the seconds; writes
each run's Markdown report next to the home. There is no peer figure to set beside these:
no RAG platform we know publishes counterfactual probes of its answers.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from answers import faquad
from common import data_dir, machine

from alicerce import Alicerce
from alicerce.datasets import Row, build
from alicerce.evaluate.fairness import Fairness
from alicerce.evaluate.fairness_report import markdown
from alicerce.evaluate.runs import Run

ROOT = Path(__file__).resolve().parent.parent


def show(name: str, run: Run, out: Path) -> None:
    s = run.summary

    def pct(key: str) -> str:
        e = s.get(key)
        return "-" if e is None or not e.n else f"{e.mean:.2f} [{e.low:.2f}, {e.high:.2f}]"
    print(f"\n{name}: {run.rows} pairs, {run.seconds:.0f} s, judge {run.judge}")
    print(f"  {'attribute':<12} {'pairs':>5}  {'changed (judge)':<18} {'above control':<20} "
          f"{'changed (metric)':<18} {'abstention diff':<18} refusal diff")
    for attr in [*run.lineage["measured"], "control"]:
        n = s[f"{attr}.distance"].n if f"{attr}.distance" in s else 0
        print(f"  {attr:<12} {n:>5}  {pct(attr + '.changed'):<18} "
              f"{pct(attr + '.changed_over_control'):<20} {pct(attr + '.changed_metric'):<18} "
              f"{pct(attr + '.abstention_diff'):<18} {pct(attr + '.refusal_diff')}")
    out.write_text(markdown(run, top=8), encoding="utf-8")
    print(f"  report: {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--home", default="/tmp/alicerce-bench-fairness")
    ap.add_argument("--sets", default="handbook,faquad")
    args = ap.parse_args()
    print(f"machine: {machine()}")
    alc = Alicerce.open(args.home)
    home = Path(args.home)
    wanted = args.sets.split(",")
    if "handbook" in wanted:
        alc.ingest([ROOT / "examples/handbook"], "handbook")
        alc.deploy_app((ROOT / "examples/handbook-app.yaml").read_text(encoding="utf-8"),
                       actor="bench")
        ds = alc.dataset(ROOT / "examples/handbook-fairness.jsonl")
        t = time.perf_counter()
        run = Fairness(alc, "rh").run(ds, ["gender", "region", "age", "disability",
                                           "name-origin"])
        print(f"handbook: {time.perf_counter() - t:.0f} s")
        show("handbook (rh app, qwen-1.5b, rails on)", run, home / "fairness-handbook.md")
    if "faquad" in wanted:
        corpus, mapping, items = faquad(data_dir(args.data, "pt-faquad"), 200, home)
        alc.ingest([corpus], "faquad", **mapping)  # type: ignore[arg-type]
        sample = random.Random(0).sample(items, args.n)
        ds = build("faquad-sample", [Row(f"q{i}", it.question, reference=it.golds[0])
                                     for i, it in enumerate(sample)])
        t = time.perf_counter()
        run = Fairness(alc, "faquad").run(ds, ["gender", "age", "name-origin"], personas=True)
        print(f"faquad: {time.perf_counter() - t:.0f} s")
        show(f"FaQuAD ({args.n} questions as personas, qwen-1.5b)", run,
             home / "fairness-faquad.md")
    print(json.dumps({"home": args.home}))
    alc.close()


if __name__ == "__main__":
    main()
