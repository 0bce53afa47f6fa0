"""What an evaluation run asks of an app, one row at a time: a RAG app's answer, a chain
app's outputs. The same functions run here or on a Ray worker (setting `executor`), so a
spread run scores exactly what a local run would.

On a cluster the answers are asked first, all rows at once over the workers, each stored
in the run's memo as it arrives (an interrupted run keeps them); scoring and judging then
run here as usual, reading them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from alicerce.errors import AlicerceError

if TYPE_CHECKING:
    from alicerce.batch.ray_rows import Call
    from alicerce.evaluate.runs import RunStore
    from alicerce.platform import Alicerce

Ready = dict[str, dict[str, Any]]  # memo key -> the row's answer or outputs
Errors = dict[str, str]  # memo key -> why the row has none


def answer_row(alc: Alicerce, ref: str, question: str, filters: dict[str, Any] | None,
               model: str | None, adapter: str | None) -> dict[str, Any]:
    """A RAG app's answer, with what the metrics read of it."""
    started = time.perf_counter()
    a = alc.ask(question, ref, filters=filters or None, model=model, adapter=adapter,
                caller="eval")
    return {"text": a.text, "abstained": a.abstained, "blocked": a.blocked,
            "trace_id": a.trace_id,
            "contexts": [h.text for h in a.chunks],
            "cited": [c.doc_key for c in a.citations],
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "tokens": a.usage.completion_tokens, "prompt_tokens": a.usage.prompt_tokens}


def chain_row(alc: Alicerce, ref: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """A chain app's outputs, with how its agent and JSON steps went."""
    result = alc.chains.run(ref, inputs, caller="eval")
    return {"outputs": result.outputs, "trace_id": result.trace_id,
            "agents": list(result.agents), "latency_ms": result.latency_ms,
            "json_steps": len(result.json_tries),
            "first_try": all(t == 1 for t in result.json_tries)}


def spread(alc: Alicerce, runs: RunStore, calls: Sequence[Call], cache: bool,
           progress: Callable[[int, int], None] | None) -> tuple[Ready, Errors]:
    """Run on the cluster every call not already memoised (all of them without `cache`)."""
    from alicerce.batch.ray_rows import Failed, on_cluster

    todo = [c for c in {c.key: c for c in calls}.values()
            if not (cache and runs.has(c.key))]
    ready: Ready = {}
    errors: Errors = {}
    if not todo:
        return ready, errors
    for key, got in on_cluster(alc.settings).calls(todo, progress):
        if isinstance(got, Failed):
            errors[key] = got.message
        else:
            ready[key] = got
            runs.put(key, got)
    return ready, errors


def take(ready: Ready, errors: Errors, key: str,
         compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The row's result from the cluster if it ran there, else computed here."""
    if key in errors:
        raise AlicerceError(errors[key])
    return ready[key] if key in ready else compute()
