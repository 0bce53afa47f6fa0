"""Admission by the KV cache's real size, so parallel requests queue instead of failing.

llama.cpp's parallel slots share one unified KV cache of `llm_context` tokens, and each slot
may use all of it: four 1.5k-token prompts with room to answer need more than a 4k window,
and llama.cpp then fails requests with "Context size has been exceeded" (issue 16 item 7:
four simultaneous asks failed every time). A request here claims its prompt plus its
`max_tokens` (times `n`) before it reaches llama.cpp and waits, first come first served,
until that much is free. A request that can never fit is shrunk (fewer tokens to generate)
or refused with a clear error before any work.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

from alicerce.errors import InputError

# Tokens the chat template adds around each message and before the answer (role markers, a
# default system prompt such as Qwen's); counted generously so an estimate is never short.
PER_MESSAGE = 8
PER_PROMPT = 48
MIN_ANSWER = 16  # a prompt that leaves less room than this cannot be answered


class KvBudget:
    def __init__(self, tokens: int) -> None:
        self.total = self.free = tokens
        self._cond = threading.Condition()
        self._line: deque[object] = deque()

    def fit(self, prompt: int, max_tokens: int, n: int = 1) -> int:
        """The max_tokens that fits beside `prompt` in the whole window (shrunk when
        needed); InputError when not even the prompt fits."""
        room = self.total // n - prompt
        if room < MIN_ANSWER:
            raise InputError(f"the prompt does not fit: it needs about {prompt} tokens (x{n} "
                             f"candidates) and the context window holds {self.total}",
                             hint="shorten the input or history, ask for fewer candidates, "
                                  "or raise llm_context")
        return min(max_tokens, room)

    @contextmanager
    def claim(self, tokens: int) -> Iterator[None]:
        """Hold `tokens` of the cache while the request runs (waiting in line for them)."""
        tokens = min(tokens, self.total)
        ticket = object()
        with self._cond:
            self._line.append(ticket)
            self._cond.wait_for(lambda: self._line[0] is ticket and self.free >= tokens)
            self._line.popleft()
            self.free -= tokens
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self.free += tokens
                self._cond.notify_all()
