"""Embedding requests batched: those that arrive within a few milliseconds of each other
run as one call, so many small clients cost one pass of the encoder."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import anyio.to_thread

from alicerce.platform import Alicerce


class EmbedBatcher:
    """Embedding requests that arrive within `wait_s` of each other run as one batch."""

    def __init__(self, alc: Alicerce, wait_s: float) -> None:
        self._alc, self._wait = alc, wait_s
        self._pending: dict[tuple[str, str], list[tuple[list[str], asyncio.Future[Any]]]] = {}
        self._limiter = anyio.CapacityLimiter(1)

    async def embed(self, texts: list[str], model: str, kind: str) -> list[list[float]]:
        self._alc.check_embed(texts, model, kind)  # one bad request fails alone
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        group = (model, kind)
        first = group not in self._pending
        self._pending.setdefault(group, []).append((texts, future))
        if first:
            asyncio.get_running_loop().create_task(self._flush(group))
        result: list[list[float]] = await future
        return result

    async def _flush(self, group: tuple[str, str]) -> None:
        await asyncio.sleep(self._wait)
        batch = self._pending.pop(group)
        texts = [t for ts, _ in batch for t in ts]
        try:
            vectors = await anyio.to_thread.run_sync(
                lambda: self._alc.embed(texts, group[0], group[1]),
                limiter=self._limiter)
        except BaseException as exc:  # every waiting request gets the error
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        at = 0
        for ts, fut in batch:
            if not fut.done():
                fut.set_result(vectors[at:at + len(ts)])
            at += len(ts)
