"""Rows of apps on a Ray cluster (setting `executor`): batch rows (CLI and server jobs) and
the answers an evaluation run scores.

The job stays where it was started: it reads the input, writes each finished row (the
batch output, the evaluation's memo and results), keeps the progress. Each row runs on a
Ray worker that opened the same home (the same PostgreSQL store, or the same SQLite file on
a shared disk) and loaded the app's models once. A worker that dies is restarted by Ray and
its row run again (`max_restarts`, `max_task_retries`); since only the job writes results,
every row is in them exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from alicerce.config import Settings
from alicerce.embed.ray_pool import connect, pooled, release
from alicerce.errors import AlicerceError


@dataclass(frozen=True)
class ChainRow:
    """What a batch row keeps of a chain run, and what its key is charged."""

    outputs: dict[str, Any]
    blocked: str
    trace_id: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    """A row whose run raised an AlicerceError on the worker (the message, for the row)."""

    message: str


@dataclass(frozen=True)
class Call:
    """One evaluation row for a worker: `kind` "answer" (a RAG app's answer to a question)
    or "chain" (a chain app's outputs for inputs); `key` says where its result goes."""

    key: str
    kind: Literal["answer", "chain"]
    ref: str
    question: str = ""
    filters: dict[str, Any] | None = None
    inputs: dict[str, Any] | None = None
    model: str | None = None
    adapter: str | None = None


class _RowWorker:
    """One Ray actor: a home opened once, running rows of apps."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from alicerce.platform import Alicerce

        self._alc = Alicerce(Settings(**settings))

    def run(self, ref: str, inputs: dict[str, Any], caller: str, origin: str) -> ChainRow:
        result = self._alc.chains.run(ref, inputs, caller=caller, origin=origin)
        self._alc.traces.flush()  # the job's reader may look the trace up at once
        return ChainRow(result.outputs, result.blocked, result.trace_id,
                        result.usage.prompt_tokens, result.usage.completion_tokens)

    def call(self, c: Call) -> tuple[str, dict[str, Any] | Failed]:
        from alicerce.evaluate.answers import answer_row, chain_row

        try:
            if c.kind == "chain":
                out = chain_row(self._alc, c.ref, c.inputs or {})
            else:
                out = answer_row(self._alc, c.ref, c.question, c.filters, c.model, c.adapter)
        except AlicerceError as exc:
            return c.key, Failed(str(exc))
        self._alc.traces.flush()
        return c.key, out

    def pid(self) -> int:
        import os

        return os.getpid()


class RayRows:
    """`executor_workers` actors; AlicerceErrors of a batch row come back as themselves
    (the row's error line), anything else as Ray raised it."""

    def __init__(self, settings: Settings) -> None:
        self._ray = connect(settings.executor)
        worker = self._ray.remote(num_cpus=settings.executor_cpus, max_restarts=-1,
                                  max_task_retries=-1)(_RowWorker)
        self.workers = [worker.remote(_worker_settings(settings))
                        for _ in range(settings.executor_workers)]

    def run(self, n: int, ref: str, inputs: dict[str, Any], caller: str,
            origin: str) -> ChainRow:
        """Row `n` of a batch, on worker n mod workers."""
        actor = self.workers[n % len(self.workers)]
        try:
            out: ChainRow = self._ray.get(actor.run.remote(ref, inputs, caller, origin))
            return out
        except self._ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, AlicerceError):
                raise exc.cause from None
            raise

    def close(self) -> None:
        release(self, self._ray, self.workers)

    def calls(self, calls: Sequence[Call], progress: Callable[[int, int], None] | None = None
              ) -> Iterator[tuple[str, dict[str, Any] | Failed]]:
        """Every call's result as it finishes (any order), each worker busy with one."""
        from ray.util import ActorPool

        pool = ActorPool(self.workers)
        work: list[Any] = list(calls)
        for i, got in enumerate(pool.map_unordered(lambda w, c: w.call.remote(c), work), 1):
            if progress:
                progress(i, len(calls))
            yield got


def _worker_settings(settings: Settings) -> dict[str, Any]:
    """A worker's models run on the cores it reserved (`executor_cpus`), not on all the
    node's: two workers on one node would otherwise fight over the same cores."""
    cpus = settings.executor_cpus
    return {**settings.model_dump(mode="json"), "executor": "", "llm_threads": cpus,
            "embed_threads": cpus}


def on_cluster(settings: Settings) -> RayRows:
    """The workers for `settings` (started once per process: each loads models once)."""
    key = json.dumps([settings.executor, _worker_settings(settings)], sort_keys=True,
                     default=str)
    return pooled(("rows", key), lambda: RayRows(settings))
