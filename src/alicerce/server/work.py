"""Model work off the event loop, behind a bounded queue.

`llm_parallel` requests run at once (llama.cpp batches them across its slots); up to
`queue_size` more wait, and none longer than `queue_max_wait_s`: a request whose expected
wait (from how long requests have recently held a slot) is over that bound is answered 503
with Retry-After at once, instead of hanging until the client's own timeout. A stream holds
its slot until its worker thread has stopped, so a client that hangs up frees the slot as
soon as llama.cpp ends the request (at its next token).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from alicerce.errors import OverloadedError

T = TypeVar("T")


class WorkQueue:
    def __init__(self, slots: int, waiting: int, max_wait_s: float = 60.0,
                 on_depth: Callable[[int, int], None] = lambda running, waiting: None) -> None:
        self.slots, self.max_waiting, self.max_wait_s = slots, waiting, max_wait_s
        self.running = self.waiting = 0
        self.hold_s = 0.0  # how long a request holds its slot (moving average; 0 = unknown)
        self._started: dict[object, float] = {}  # when each running request got its slot
        self._sem: asyncio.Semaphore | None = None
        self._threads = anyio.CapacityLimiter(slots + 4)
        self._on_depth = on_depth

    def expected_wait(self) -> float:
        """Seconds a request arriving now would wait for a slot: the running requests' time
        left (from the recent hold time), then whole holds for each round of waiters."""
        if self.running < self.slots:
            return 0.0
        now = time.monotonic()
        left = sorted(max(0.0, self.hold_s - (now - t)) for t in self._started.values())
        rounds, place = divmod(self.waiting, self.slots)
        return left[min(place, len(left) - 1)] + rounds * self.hold_s if left else 0.0

    def _busy(self, why: str, retry_after: float) -> OverloadedError:
        return OverloadedError(
            f"the server is busy: {self.running} requests running and {self.waiting} "
            f"waiting; {why}", hint="retry after the time in Retry-After",
            retry_after=max(1.0, retry_after))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Refused at once (503) when the queue is full or the wait would pass
        `max_wait_s`; refused later if the wait still passes it."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
        expected = self.expected_wait()
        if self.running >= self.slots and self.waiting >= self.max_waiting:
            raise self._busy("the queue is full", expected or 2.0)
        if expected > self.max_wait_s:
            raise self._busy(f"the wait would be about {expected:.0f} s, over the "
                             f"{self.max_wait_s:.0f} s bound (queue_max_wait_s)", expected)
        self.waiting += 1
        self._on_depth(self.running, self.waiting)
        try:
            await asyncio.wait_for(self._sem.acquire(), self.max_wait_s)
        except TimeoutError:
            raise self._busy(f"no slot came free in {self.max_wait_s:.0f} s",
                             self.expected_wait() or self.max_wait_s) from None
        finally:
            self.waiting -= 1
        self.running += 1
        self._on_depth(self.running, self.waiting)
        started = time.monotonic()
        token = object()
        self._started[token] = started
        try:
            yield
        finally:
            del self._started[token]
            held = time.monotonic() - started
            self.hold_s = held if not self.hold_s else 0.8 * self.hold_s + 0.2 * held
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
