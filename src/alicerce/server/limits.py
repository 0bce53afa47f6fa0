"""Per-key rate limits: requests and tokens per minute over a sliding 60-second window.

Tokens are known only after an answer, so a request is admitted while the window's tokens
are under the limit and its tokens are added when it finishes (as OpenAI does).
"""

from __future__ import annotations

import threading
import time
from collections import deque

from alicerce.access.keys import ApiKey
from alicerce.errors import RateLimitError

WINDOW_S = 60.0


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
            if len(reqs) >= key.rpm:
                raise RateLimitError(
                    f"key {key.id} reached its {key.rpm} requests per minute",
                    hint="wait, or ask an admin for a key with a higher --rpm",
                    retry_after=reqs[0] + WINDOW_S - now)
            used = sum(n for _, n in toks)
            if used >= key.tpm:
                raise RateLimitError(
                    f"key {key.id} used its {key.tpm} tokens per minute",
                    hint="wait, or ask an admin for a key with a higher --tpm",
                    retry_after=toks[0][0] + WINDOW_S - now)
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


def _expire(reqs: deque[float], toks: deque[tuple[float, int]], now: float) -> None:
    while reqs and reqs[0] <= now - WINDOW_S:
        reqs.popleft()
    while toks and toks[0][0] <= now - WINDOW_S:
        toks.popleft()
