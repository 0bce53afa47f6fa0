"""Inference cache: answers reused for the same request against the same versions.

The exact key hashes the normalised question (whitespace collapsed) with its *context*:
the app or model, every version the answer depends on (collection version, prompt
name@version, model, decoding parameters) and the caller's collection scope, so keys limited
to different collections never share an entry, and a new collection or prompt version makes
old entries unreachable (and `drop` removes them at once). The opt-in semantic cache also
returns an entry of the same context whose question embedding is within the threshold.
Entries expire after `ttl_s`; the least recently used go first beyond `size`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

Vector = NDArray[np.float32]


@dataclass
class _Entry:
    context: str
    app: str
    value: dict[str, Any]
    expires: float  # monotonic time
    vector: Vector | None


class AnswerCache:
    def __init__(self, size: int, ttl_s: float, embed: Callable[[str], Vector] | None = None,
                 threshold: float = 0.95) -> None:
        self.size, self.ttl_s, self.threshold = size, ttl_s, threshold
        self._embed = embed
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.size > 0

    @staticmethod
    def context(**parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str)
                              .encode()).hexdigest()

    def get(self, context: str, question: str) -> tuple[dict[str, Any] | None, str]:
        """(value, "exact" | "semantic") on a hit, (None, "") on a miss."""
        if not self.enabled:
            return None, ""
        key = _key(context, question)
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.expires <= now:
                del self._entries[key]
            elif entry is not None:
                self._entries.move_to_end(key)
                return entry.value, "exact"
            same = [(k, e) for k, e in self._entries.items()
                    if e.context == context and e.vector is not None and e.expires > now]
        if self._embed is None or not same:
            return None, ""
        q = self._embed(question)
        best_key, best = max(((k, float(e.vector @ q)) for k, e in same  # type: ignore[operator]
                              ), key=lambda kv: kv[1])
        if best < self.threshold:
            return None, ""
        with self._lock:
            entry = self._entries.get(best_key)
            return (entry.value, "semantic") if entry is not None else (None, "")

    def put(self, context: str, app: str, question: str, value: dict[str, Any],
            ttl_s: float | None = None) -> None:
        """Keep an answer for `ttl_s` (an app's own cache.ttl_s) or the cache's default."""
        if not self.enabled:
            return
        vector = self._embed(question) if self._embed is not None else None
        expires = time.monotonic() + (self.ttl_s if ttl_s is None else ttl_s)
        with self._lock:
            self._entries[_key(context, question)] = _Entry(context, app, value, expires,
                                                            vector)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def drop(self, app: str) -> int:
        """Forget every answer of `app` (its collection changed); returns how many."""
        with self._lock:
            stale = [k for k, e in self._entries.items() if e.app == app]
            for k in stale:
                del self._entries[k]
        return len(stale)

    def __len__(self) -> int:
        return len(self._entries)


def _key(context: str, question: str) -> str:
    return context + ":" + hashlib.sha256(" ".join(question.split()).encode()).hexdigest()
