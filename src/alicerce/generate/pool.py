"""One loaded base model with its LoRA adapters, swapped whole when the set of adapters changes.

llama.cpp attaches adapters only when it loads a model, so serving an adapter registered
after start-up means loading the base again. A `BasePool` does that beside the running
instance, which keeps serving while the new one loads. Then requests already running finish
on the old one (they hold it), and new ones wait for them before starting on the new one:
two llama.cpp instances decoding at once in one process fight over the cores (their thread
teams spin), and on a laptop both slowed tens of times (bench/adapters.py), so they take
turns. The old one is dropped when idle, which frees its memory (xllamacpp frees a server
when its last reference goes). A load that fails leaves the old instance serving and
records why (`last`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alicerce.errors import AlicerceError
from alicerce.generate.llamacpp import LlamaCppGenerator, release

log = logging.getLogger("alicerce.models")
# The longest new requests wait for the old instance's requests; past it they start beside
# them (slower, never lost). A request's own limits (max_tokens) end it well before.
DRAIN_S = 120.0


@dataclass(frozen=True)
class Swap:
    """What the last change of adapters did: how many are attached, how long the load took,
    and the error that kept the old instance serving, if one did."""

    base: str
    adapters: int
    seconds: float
    error: str = ""
    at: float = 0.0


class BasePool:
    """The current instance of one base model, and the ones being drained."""

    def __init__(self, name: str,
                 build: Callable[[tuple[Path, ...]], LlamaCppGenerator]) -> None:
        self.name = name
        self._build = build
        self._lock = threading.Lock()  # one load at a time per base
        self.current: LlamaCppGenerator | None = None
        self.last: Swap | None = None
        self._draining: list[LlamaCppGenerator] = []
        self._open = threading.Event()  # clear while an old instance drains
        self._open.set()

    def instance(self, wanted: Callable[[], tuple[Path, ...]]) -> LlamaCppGenerator:
        """The current instance (once a swap's old one has drained); loaded with `wanted()`
        first if nothing is loaded yet (asked only then: it reads the registry)."""
        self._open.wait(DRAIN_S)
        current = self.current
        return current if current is not None else self.ensure(wanted())

    def ensure(self, wanted: tuple[Path, ...], wait: bool = True) -> LlamaCppGenerator:
        """An instance with exactly `wanted` attached: the current one, or a new one loaded
        now and switched to, the old one drained in the background (`wait`: return once it
        has). A failed load keeps the old one serving and raises."""
        with self._lock:
            current = self.current
            if current is not None and current.adapters == wanted:
                if wait:
                    self._open.wait(DRAIN_S)
                return current
            started = time.perf_counter()
            try:
                new = self._build(wanted)
            except AlicerceError as exc:
                self.last = Swap(self.name, len(wanted), time.perf_counter() - started,
                                 exc.message, time.time())
                log.error("%s: loading with %d adapters failed, the old instance keeps "
                          "serving: %s", self.name, len(wanted), exc.message)
                raise
            if current is not None:
                self._open.clear()
                self._retire(current)
            self.current = new
            self.last = Swap(self.name, len(wanted), time.perf_counter() - started,
                             at=time.time())
        if current is not None:
            log.info("%s: now serving %d adapters (loaded in %.1f s) once the old instance's "
                     "requests finish", self.name, len(wanted), self.last.seconds)
        if wait:
            self._open.wait(DRAIN_S)
        return new

    def _retire(self, old: LlamaCppGenerator) -> None:
        release(old)  # no later load returns it
        self._draining.append(old)

        def drain() -> None:
            if not old.idle.wait_idle(DRAIN_S):
                log.warning("%s: the old instance is still busy after %.0f s; new requests "
                            "start beside it", self.name, DRAIN_S)
            self._draining.remove(old)  # the last reference: llama.cpp frees it
            self._open.set()

        threading.Thread(target=drain, daemon=True, name=f"drain-{self.name}").start()

    def draining(self) -> int:
        """Old instances still finishing their requests."""
        return len(self._draining)
