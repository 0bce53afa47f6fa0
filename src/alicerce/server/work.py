"""Model work off the event loop, behind a bounded queue.

`llm_parallel` requests run at once (llama.cpp batches them across its slots); up to
`queue_size` more wait; beyond that the server answers 503 with Retry-After instead of piling
up. A stream holds its slot until its worker thread has stopped, so a client that hangs up
frees the slot as soon as llama.cpp ends the request (at its next token).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from alicerce.errors import OverloadedError

T = TypeVar("T")


class WorkQueue:
    def __init__(self, slots: int, waiting: int,
                 on_depth: Callable[[int, int], None] = lambda running, waiting: None) -> None:
        self.slots, self.max_waiting = slots, waiting
        self.running = self.waiting = 0
        self._sem: asyncio.Semaphore | None = None
        self._threads = anyio.CapacityLimiter(slots + 4)
        self._on_depth = on_depth

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
        if self.running >= self.slots and self.waiting >= self.max_waiting:
            raise OverloadedError(
                f"the server is busy: {self.running} requests running and {self.waiting} "
                "waiting", hint="retry after the time in Retry-After", retry_after=2.0)
        self.waiting += 1
        self._on_depth(self.running, self.waiting)
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self._on_depth(self.running, self.waiting)
        try:
            yield
        finally:
            self.running -= 1
            self._sem.release()
            self._on_depth(self.running, self.waiting)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in a worker thread once a slot is free."""
        async with self.slot():
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._threads)

    async def iterate(self, make: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
        """Items of the iterator `make()` builds, produced in a worker thread under a slot.

        Closing this async iterator (the client went away) stops the worker at its next item.
        """
        async with self.slot():
            loop = asyncio.get_running_loop()
            items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
            stop = threading.Event()

            def put(kind: str, item: Any) -> None:
                try:
                    loop.call_soon_threadsafe(items.put_nowait, (kind, item))
                except RuntimeError:  # the loop is gone (server shutting down)
                    stop.set()

            def pump() -> None:
                it: Iterator[T] | None = None
                try:
                    it = make()
                    for item in it:
                        put("item", item)
                        if stop.is_set():
                            break
                    put("end", None)
                except BaseException as exc:  # handed to the event loop's side
                    put("error", exc)
                finally:
                    close = getattr(it, "close", None)
                    if close is not None:
                        close()

            worker = threading.Thread(target=pump, daemon=True, name="alicerce-stream")
            worker.start()
            try:
                while True:
                    kind, item = await items.get()
                    if kind == "error":
                        raise item
                    if kind == "end":
                        return
                    yield item
            finally:
                stop.set()
                with anyio.CancelScope(shield=True):  # even when the client is gone
                    await anyio.to_thread.run_sync(worker.join, limiter=self._threads)
