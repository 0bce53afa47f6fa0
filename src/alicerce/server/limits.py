"""Per-key rate limits: requests and tokens per minute over a sliding 60-second window.

Tokens are known only after an answer, so a request is admitted while the window's tokens
are under the limit and its tokens are added when it finishes (as OpenAI does). One server
counts in memory (`RateLimiter`); replicas sharing a PostgreSQL store count in it
(`SharedRateLimiter`), so a key's limit holds across all of them.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from alicerce.access.keys import ApiKey
from alicerce.errors import RateLimitError

if TYPE_CHECKING:
    from alicerce.store.sql import PgSql

WINDOW_S = 60.0


class Limiter(Protocol):
    def admit(self, key: ApiKey) -> None: ...

    def wait_s(self, key: ApiKey) -> float: ...

    def spend(self, key: ApiKey, tokens: int) -> None: ...

    def close(self) -> None: ...


def _refuse(key: ApiKey, requests: int, tokens: int, first_request: float | None,
            first_tokens: float | None, now: float) -> None:
    """RateLimitError when the window holds `key.rpm` requests or `key.tpm` tokens."""
    if requests >= key.rpm:
        raise RateLimitError(
            f"key {key.id} reached its {key.rpm} requests per minute",
            hint="wait, or ask an admin for a key with a higher --rpm",
            retry_after=(first_request or now) + WINDOW_S - now)
    if tokens >= key.tpm:
        raise RateLimitError(
            f"key {key.id} used its {key.tpm} tokens per minute",
            hint="wait, or ask an admin for a key with a higher --tpm",
            retry_after=(first_tokens or now) + WINDOW_S - now)


class RateLimiter:
    def __init__(self) -> None:
        self._requests: dict[str, deque[float]] = {}
        self._tokens: dict[str, deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    def admit(self, key: ApiKey) -> None:
        """Count one request, or raise RateLimitError with the seconds until one is free."""
        now = time.monotonic()
        with self._lock:
            reqs = self._requests.setdefault(key.id, deque())
            toks = self._tokens.setdefault(key.id, deque())
            _expire(reqs, toks, now)
            _refuse(key, len(reqs), sum(n for _, n in toks), reqs[0] if reqs else None,
                    toks[0][0] if toks else None, now)
            reqs.append(now)

    def wait_s(self, key: ApiKey) -> float:
        """Seconds until `key`'s tokens in the window are under its limit (0: now). Batch
        rows wait for this instead of failing, so a batch spends a key's tokens no faster
        than live requests may."""
        now = time.monotonic()
        with self._lock:
            reqs = self._requests.setdefault(key.id, deque())
            toks = self._tokens.setdefault(key.id, deque())
            _expire(reqs, toks, now)
            if not toks or sum(n for _, n in toks) < key.tpm:
                return 0.0
            return max(toks[0][0] + WINDOW_S - now, 0.01)

    def spend(self, key: ApiKey, tokens: int) -> None:
        if tokens > 0:
            with self._lock:
                self._tokens.setdefault(key.id, deque()).append((time.monotonic(), tokens))

    def close(self) -> None:
        """Nothing to release: the counts live in this process."""


def _expire(reqs: deque[float], toks: deque[tuple[float, int]], now: float) -> None:
    while reqs and reqs[0] <= now - WINDOW_S:
        reqs.popleft()
    while toks and toks[0][0] <= now - WINDOW_S:
        toks.popleft()


SHARED_SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_events (
    key_id TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    tokens INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rate_events_window ON rate_events (key_id, at)
"""
# One round trip: the database's clock, the key's rows in the window, and the rows that left
# it deleted on the way (a data-modifying CTE; the count filters by time, so it does not
# depend on the delete).
_WINDOW = """
WITH now AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS t),
gone AS (DELETE FROM rate_events WHERE key_id = ? AND at <= (SELECT t FROM now) - ?)
SELECT now.t, count(*) FILTER (WHERE e.kind = 'r'), coalesce(sum(e.tokens), 0),
       min(e.at) FILTER (WHERE e.kind = 'r'), min(e.at) FILTER (WHERE e.kind = 't')
FROM now LEFT JOIN rate_events e ON e.key_id = ? AND e.at > now.t - ? GROUP BY now.t
"""


class SharedRateLimiter:
    """The same limits counted in PostgreSQL: one row per request and per answer's tokens,
    admitted under the key's own advisory lock (keys do not wait for each other) and timed
    by the database's clock (replicas' clocks may differ). Rows leave the window as they are
    read."""

    def __init__(self, url: str) -> None:
        from alicerce.store.sql import PgSql  # the postgres extra

        self._db: PgSql = PgSql(url, SHARED_SCHEMA)

    @staticmethod
    def _lock(key: ApiKey) -> int:
        return int.from_bytes(hashlib.sha256(f"rate:{key.id}".encode()).digest()[:8],
                              "big", signed=True)

    def _window(self, key: ApiKey) -> tuple[float, tuple[Any, ...]]:
        row = self._db.execute(_WINDOW, (key.id, WINDOW_S, key.id, WINDOW_S)).fetchone()
        return float(row[0]), tuple(row[1:])

    def admit(self, key: ApiKey) -> None:
        with self._db.tx(self._lock(key)):
            # A count lost to a database crash only loosens one window: do not wait for disk.
            self._db.execute("SET LOCAL synchronous_commit = off")
            now, (requests, tokens, first_request, first_tokens) = self._window(key)
            _refuse(key, int(requests), int(tokens), first_request, first_tokens, now)
            self._db.execute("INSERT INTO rate_events VALUES (?, ?, 'r', 0)", (key.id, now))

    def wait_s(self, key: ApiKey) -> float:
        with self._db.tx(self._lock(key)):
            now, (_, tokens, _, first_tokens) = self._window(key)
        if int(tokens) < key.tpm or first_tokens is None:
            return 0.0
        return max(float(first_tokens) + WINDOW_S - now, 0.01)

    def spend(self, key: ApiKey, tokens: int) -> None:
        if tokens > 0:
            self._db.execute("INSERT INTO rate_events VALUES (?, "
                             "extract(epoch FROM clock_timestamp()), 't', ?)",
                             (key.id, tokens))

    def close(self) -> None:
        self._db.close()
