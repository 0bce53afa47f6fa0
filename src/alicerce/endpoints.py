"""Several OpenAI-compatible servers of one model, used as one: model servers scale apart
from the API replicas (vLLM, llama.cpp's server, Ollama, TEI behind one name).

Each call goes to the least busy server that is up (ties in turn). A server that fails to
answer (connection refused, timeout, 5xx) is marked down and the call moves to the next one,
so a server dying mid-run costs no request; a streamed answer moves only if nothing was
streamed yet. A down server gets no traffic for `cooldown_s`, then is probed with
`GET /models` before it gets requests again. Errors about the request itself (4xx) are not
retried: another server would refuse it too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

COOLDOWN_S = 10.0
PROBE_TIMEOUT_S = 2.0


@dataclass
class Server:
    url: str
    client: Any
    inflight: int = 0
    served: int = 0
    failures: int = 0
    down_until: float = 0.0  # monotonic; 0 = up
    last_error: str = ""


@dataclass(frozen=True)
class ServerState:
    url: str
    up: bool
    inflight: int
    served: int
    failures: int
    last_error: str


def retryable(exc: BaseException) -> bool:
    """Whether another server might answer: the server, not the request, failed."""
    status = getattr(exc, "status_code", None)
    if status is not None:
        return int(status) >= 500
    name = type(exc).__name__
    return name in {"APIConnectionError", "APITimeoutError"} or isinstance(
        exc, (ConnectionError, TimeoutError, OSError))


class Endpoints:
    """The servers of one model, each with its own `openai` client (no client retries:
    moving to another server is the retry)."""

    def __init__(self, urls: list[str], make_client: Callable[[str], Any],
                 cooldown_s: float = COOLDOWN_S) -> None:
        self.servers = [Server(u, make_client(u)) for u in urls]
        self.cooldown_s = cooldown_s
        self._lock = threading.Lock()
        self._turn = 0

    @property
    def description(self) -> str:
        return ", ".join(s.url for s in self.servers)

    def state(self) -> list[ServerState]:
        now = time.monotonic()
        with self._lock:
            return [ServerState(s.url, s.down_until <= now, s.inflight, s.served, s.failures,
                                s.last_error) for s in self.servers]

    def _probe(self, server: Server) -> bool:
        try:
            server.client.with_options(timeout=PROBE_TIMEOUT_S, max_retries=0).models.list()
            return True
        except Exception as exc:  # any failure keeps it down; the reason is kept
            server.last_error = f"health check: {exc}"
            return False

    def _pick(self, tried: list[Server]) -> Server | None:
        """The least busy server that is up (in turn among equals); one whose cooldown
        ended is health-checked first. When every server is down, the one due back first:
        trying it costs less than refusing."""
        now = time.monotonic()
        with self._lock:
            self._turn = (self._turn + 1) % len(self.servers)
            order = self.servers[self._turn:] + self.servers[:self._turn]
            left = [s for s in order if s not in tried]
        for s in sorted((s for s in left if s.down_until <= now), key=lambda s: s.inflight):
            if s.failures == 0 or self._recovered(s):
                return s
        down = [s for s in left if s.down_until > time.monotonic()]
        return min(down, key=lambda s: s.down_until) if down else None

    def _recovered(self, server: Server) -> bool:
        """A server that failed before gets traffic again only after a health check."""
        if self._probe(server):
            with self._lock:
                server.failures = 0
            return True
        self._down(server, server.last_error)
        return False

    def _down(self, server: Server, error: str) -> None:
        with self._lock:
            server.failures += 1
            server.down_until = time.monotonic() + self.cooldown_s
            server.last_error = error

    def call(self, fn: Callable[[Any], T]) -> T:
        """`fn(client)` on one server, moving to the next while servers fail."""
        tried: list[Server] = []
        while (server := self._pick(tried)) is not None:
            tried.append(server)
            with self._lock:
                server.inflight += 1
            try:
                out = fn(server.client)
                with self._lock:
                    server.served += 1
                return out
            except Exception as exc:
                if not retryable(exc) or len(tried) == len(self.servers):
                    if retryable(exc):
                        self._down(server, str(exc))
                    raise
                self._down(server, str(exc))
            finally:
                with self._lock:
                    server.inflight -= 1
        raise ConnectionError(f"every server is down: {self.description}")

    def stream(self, open_stream: Callable[[Any], Iterator[T]]) -> Iterator[T]:
        """Items of `open_stream(client)`; moves to another server only before the first."""
        tried: list[Server] = []
        while (server := self._pick(tried)) is not None:
            tried.append(server)
            started = False
            with self._lock:
                server.inflight += 1
            try:
                for item in open_stream(server.client):
                    started = True
                    yield item
                with self._lock:
                    server.served += 1
                return
            except Exception as exc:
                last = len(tried) == len(self.servers)
                if retryable(exc):
                    self._down(server, str(exc))
                if started or not retryable(exc) or last:
                    raise
            finally:
                with self._lock:
                    server.inflight -= 1
        raise ConnectionError(f"every server is down: {self.description}")
