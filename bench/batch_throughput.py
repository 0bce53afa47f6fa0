"""Batch throughput of the review-sentiment chain against the same two model calls made
back to back by hand (issue 17; target ratio >= 0.95).

    python bench/batch_throughput.py [--rows 200] [--concurrency 1]

Rows are the twelve sample reviews in examples/chains/reviews.jsonl, cycled to --rows.
"by hand" renders the two prompts and calls qwen-1.5b then qwen-0.5b directly, with the
chain's own decoding (and one retry when the JSON is not valid, as the chain allows), one
row after another; "batch" is `alicerce batch run`'s code path (the runner, a trace per
row, a line per row appended to the output). Both run after a warm-up that loads the
models. Printed: rows/min for each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import machine

from alicerce import Alicerce, Settings
from alicerce.batch.runner import BatchRunner
from alicerce.generate.params import DecodingParams

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=1)
    args = ap.parse_args()
    reviews = [json.loads(x)["inputs"]["text"]
               for x in (ROOT / "examples/chains/reviews.jsonl").read_text().splitlines()]
    texts = [reviews[i % len(reviews)] for i in range(args.rows)]
    tmp = Path(tempfile.mkdtemp())
    src = tmp / "rows.jsonl"
    src.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
    with Alicerce(Settings.load(home=tmp / "h", embedder="hashing")) as alc:
        version, _ = alc.deploy_app(ROOT / "examples/chains/review-sentiment.yaml")
        steps = {s.id: s for s in alc.chains.plan(version).spec.steps}
        summ, cls = steps["summarise"], steps["classify"]
        big, small = alc.generator(summ.model), alc.generator(cls.model)
        p_sum, p_cls = alc.prompts.get(summ.prompt), alc.prompts.get(cls.prompt)
        d_sum, d_cls = (DecodingParams.build(**summ.decoding),
                        DecodingParams.build(**cls.decoding))

        def by_hand(text: str) -> None:
            summary = big.complete(p_sum.render(text=text), d_sum).text.strip()
            for _ in range(2):
                reply = small.complete(p_cls.render(text=summary), d_cls).text
                try:
                    json.loads(reply)
                    break
                except json.JSONDecodeError:
                    continue

        alc.run_app("review-sentiment", {"text": texts[0]})  # loads both models
        by_hand(texts[0])
        t0 = time.perf_counter()
        for t in texts:
            by_hand(t)
        hand_s = time.perf_counter() - t0
        job = alc.batches.create("local", version.name, version.version, src,
                                 tmp / "out.jsonl", args.concurrency)
        t0 = time.perf_counter()
        done = BatchRunner(alc, alc.batches).run(job)
        batch_s = time.perf_counter() - t0
        alc.traces.flush()
    hand, batch = args.rows / hand_s * 60, args.rows / batch_s * 60
    print(machine())
    print(f"{args.rows} rows, review-sentiment (qwen-1.5b -> qwen-0.5b), concurrency "
          f"{args.concurrency}")
    print(f"  by hand  {hand:7.2f} rows/min  ({hand_s:.1f} s)")
    print(f"  batch    {batch:7.2f} rows/min  ({batch_s:.1f} s, {done.succeeded} ok, "
          f"{done.failed} failed)")
    print(f"  ratio    {batch / hand:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
