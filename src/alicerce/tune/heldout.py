"""A tuned model measured against another (the frozen base, or the adapter in production)
on the rows its training held out, with the evaluation's answer metrics, as evaluation runs
that `eval compare` and `eval gate` read like any other.

Both sides answer the same prompts with the same greedy decoding on llama.cpp (the path
that serves), and the gate decides whether an adapter may take a label.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alicerce.errors import AlicerceError
from alicerce.evaluate.compare import GateResult, gate
from alicerce.evaluate.runs import RowResult, Run, memo_key, summarise
from alicerce.evaluate.text import answer_scores
from alicerce.generate.base import Generator
from alicerce.generate.params import DecodingParams
from alicerce.tune.data import Example

Progress = Callable[[int, int], None]
DEFAULT_GATE = {"answer.f1": 0.0}  # the candidate may not score lower than what it replaces


@dataclass(frozen=True)
class Side:
    """One model under test: how it is named in the run, what pins it, and its generator."""

    label: str  # "smollm2-135m" or "smollm2-135m:rh-style@2"
    identity: str
    gen: Generator
    lineage: dict[str, Any]


def score(side: Side, rows: Sequence[Example], dataset: str, version: str, run_id: str,
          max_tokens: int, progress: Progress | None = None) -> Run:
    """`side` answering every held-out row; a row whose generation fails says why."""
    params = DecodingParams.build(max_tokens=max_tokens, temperature=0.0)
    results: list[RowResult] = []
    started = time.perf_counter()
    for i, e in enumerate(rows):
        question = next((m.content for m in reversed(e.prompt) if m.role == "user"), "")
        res = RowResult(f"line-{e.line}", question[-500:], details={"reference": e.answer})
        try:
            res.answer = side.gen.complete(list(e.prompt), params).text.strip()
            res.scores.update({f"answer.{k}": v
                               for k, v in answer_scores(res.answer, [e.answer]).items()})
        except AlicerceError as exc:
            res.errors.append(f"no answer: {exc}")
        results.append(res)
        if progress:
            progress(i + 1, len(rows))
    run = Run(run_id, time.time(), "run", side.label, None,
              memo_key(side.identity, max_tokens)[:16], dataset, version, ["answer"], "",
              summarise(results), results, time.perf_counter() - started,
              {**side.lineage, "heldout_rows": len(rows), "max_tokens": max_tokens})
    run.count()
    return run


def decide(candidate: Run, incumbent: Run, max_drop: dict[str, float] | None = None
           ) -> GateResult:
    """The gate an adapter passes to take a label: no metric in `max_drop` falls more than
    allowed below the incumbent's (default: token F1 no lower)."""
    return gate(candidate, incumbent, max_drop or DEFAULT_GATE, {})
