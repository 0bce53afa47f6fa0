"""Does the answer stay in what the model reads? Sentence windows under fixed and adaptive
budgets, without generating: tokens read and how often the context still holds the answer.

    python bench/windows_recall.py [--data ../shared/data] [--n 60]

For each question the app's own retrieval runs (`Alicerce.retrieve`), then chains/select.py's
`windows` with each configuration; "holds the answer" is: the golden set (the handbook's 21
questions), the share of the reference's figures and names in the context; FaQuAD and Pirá
(answerable questions), a gold answer contained in the context; Zoomcamp, the question's own
FAQ entry among the sources. No model call, so the whole grid costs a few minutes; it chose
the adaptive budget's defaults, and `bench/latency.py` / `bench/answers.py` then measured
the answers themselves (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from answers import Item, faquad, pira, zoomcamp
from common import data_dir, machine
from latency import ROOT, fact_recall, golden

from alicerce import Alicerce
from alicerce.chains.select import windows
from alicerce.evaluate.text import contains
from alicerce.types import Hit

CONFIGS: list[tuple[str, dict[str, Any]]] = [
    *[(f"fixed {b}", {"budget": b}) for b in (120, 150, 200, 320)],
    *[(f"320, min {m}, drop {d}", {"budget": 320, "least": m, "drop": d})
      for d in (0.02, 0.03, 0.04) for m in (100, 150)],
]


def grid(alc: Alicerce, rows: Sequence[tuple[str, list[Hit]]],
         held: Callable[[int, str, Sequence[Hit]], float], name: str) -> None:
    gen = alc.generator(alc.settings.generator)
    emb = alc.sentence_embedder()
    for label, cfg in CONFIGS:
        tokens, ok = [], []
        for i, (question, hits) in enumerate(rows):
            src = windows(question, hits, emb, cfg["budget"], gen.count_tokens,
                          least=cfg.get("least"), drop=cfg.get("drop", 0.02))
            tokens.append(sum(gen.count_tokens(h.text) + 12 for h in src))
            ok.append(held(i, "\n".join(h.text for h in src), src))
        print(f"{name:<9} {label:<24} tokens p50 {statistics.median(tokens):5.0f}  holds the "
              f"answer {statistics.mean(ok):.3f} (n={len(ok)})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data")
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--home", default="/tmp/alicerce-bench-answers")
    ap.add_argument("--zoomcamp-home", default="/tmp/alicerce-bench-zoomcamp")
    a = ap.parse_args()
    print(machine())
    work = Path(tempfile.mkdtemp(prefix="alicerce-windows-"))
    alc = Alicerce.open(work / "home")
    alc.ingest([ROOT / "examples/handbook"], "handbook")
    items = golden(21)
    grid(alc, [(it["question"], alc.retrieve(it["question"], "handbook")) for it in items],
         lambda i, ctx, _: fact_recall(ctx, items[i]["reference"]), "golden")
    alc.close()
    sets = [("faquad", a.home, *faquad(data_dir(a.data, "pt-faquad"), a.n, work)),
            ("pira", a.home, *pira(data_dir(a.data, "pt-pira"), a.n, work)),
            ("zoomcamp", a.zoomcamp_home,
             *zoomcamp(data_dir(a.data, "llm-zoomcamp-faq").parent, a.n))]
    for name, home, corpus, mapping, qs in sets:
        alc = Alicerce.open(home)
        alc.ingest([corpus], name, **mapping)
        asked: list[Item] = [q for q in qs if q.answerable]

        def held(i: int, ctx: str, src: Sequence[Hit], name: str = name,
                 asked: list[Item] = asked) -> float:
            if name == "zoomcamp":
                return float(any(h.doc_key == asked[i].doc for h in src))
            return float(any(contains(ctx, g) for g in asked[i].golds))

        grid(alc, [(q.question, alc.retrieve(q.question, name, filters=q.filters or None))
                   for q in asked], held, name)
        alc.close()


if __name__ == "__main__":
    main()
