"""Batch rows on a Ray cluster (setting `executor`): the job stays where it was started (it
reads the input, appends each finished row to the output, keeps the progress), and each
row runs on a Ray worker that opened the same home (the same PostgreSQL store, or the same
SQLite file on a shared disk) and loaded the app's models once. Rows go to the workers in
turn; a worker that dies is restarted by Ray and its row run again, and since only the job
writes the output, every row is in it exactly once."""

from __future__ import annotations

from typing import Any

from alicerce.config import Settings
from alicerce.embed.ray_pool import connect
from alicerce.errors import AlicerceError


class _RowWorker:
    """One Ray actor: a home opened once, running rows of chain apps."""

    def __init__(self, settings: dict[str, Any]) -> None:
        from alicerce.platform import Alicerce

        self._alc = Alicerce(Settings(**settings))

    def run(self, ref: str, inputs: dict[str, Any], caller: str,
            origin: str) -> dict[str, Any]:
        result = self._alc.chains.run(ref, inputs, caller=caller, origin=origin)
        self._alc.traces.flush()  # the job's reader may look the trace up at once
        return {"outputs": result.outputs, "blocked": result.blocked,
                "trace_id": result.trace_id}

    def pid(self) -> int:
        import os

        return os.getpid()


class RayRows:
    """Runs one row of an app version on the next worker; AlicerceErrors come back as
    themselves (the row's error line), anything else as Ray raised it."""

    def __init__(self, settings: Settings) -> None:
        self._ray = connect(settings.executor)
        worker = self._ray.remote(max_restarts=-1, max_task_retries=-1)(_RowWorker)
        dump = {**settings.model_dump(mode="json"), "executor": ""}
        self.workers = [worker.remote(dump) for _ in range(settings.executor_workers)]

    def run(self, n: int, ref: str, inputs: dict[str, Any], caller: str,
            origin: str) -> dict[str, Any]:
        actor = self.workers[n % len(self.workers)]
        try:
            out: dict[str, Any] = self._ray.get(actor.run.remote(ref, inputs, caller, origin))
            return out
        except self._ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, AlicerceError):
                raise exc.cause from None
            raise
