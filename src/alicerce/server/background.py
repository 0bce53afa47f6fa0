"""The server's background job threads (uploads, evaluations, batches), stopped together.

A job thread works on the home's stores. Closing them under a running row crashed the
process (SQLite closed under a thread still reading it), so the server's shutdown sets
`stopping` (jobs start no new unit of work: a batch row, an evaluated question) and waits
for each thread to finish the unit it is in; the job is left to resume on the next start.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class Stopping(Exception):
    """The server is shutting down under a running job: leave it to be resumed."""


class Background:
    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def start(self, name: str, target: Callable[..., Any], *args: Any) -> None:
        """Run `target(*args)` in a daemon thread that `stop` waits for."""
        def run() -> None:
            try:
                target(*args)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, daemon=True, name=name)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def check(self) -> None:
        """Raise Stopping once the server stops: called before each unit of work."""
        if self.stopping.is_set():
            raise Stopping

    async def stop(self, timeout_s: float = 120.0) -> None:
        """No new unit of work starts; those in flight finish (the event loop keeps
        serving them while this waits)."""
        self.stopping.set()
        with self._lock:
            running = list(self._threads)
        for thread in running:
            await asyncio.to_thread(thread.join, timeout_s)
