"""Output rails on a stream: text is released a sentence at a time, after the rails that can
judge a partial answer (PII, toxicity, canary, topics) have passed the whole answer so far.
Redactions apply to what is released; a block stops the release, and the caller cuts the
generation and ends the stream with the blocking verdict. The reader waits at most one
sentence, instead of streaming being turned off."""

from __future__ import annotations

import re

from alicerce.guard.base import Context
from alicerce.guard.rails import Outcome, Rails

_BOUNDARY = re.compile(r"[.!?;:](?=\s)|\n")
MAX_HELD = 300  # characters held back when a sentence does not end


class StreamWatch:
    def __init__(self, rails: Rails, ctx: Context) -> None:
        self._rails, self._ctx = rails, ctx
        self._raw = ""
        self._checked = 0  # raw characters already judged
        self._sent = 0  # characters of the judged (redacted) text already released
        self.blocked: Outcome | None = None

    def feed(self, piece: str) -> str:
        """The text that may be shown now ("" while a sentence is incomplete)."""
        self._raw += piece
        if self.blocked is not None:
            return ""
        ends = [m.end() for m in _BOUNDARY.finditer(self._raw, self._checked)]
        cut = ends[-1] if ends else (len(self._raw) if len(self._raw) - self._checked
                                     > MAX_HELD else 0)
        return self._release(cut) if cut > self._checked else ""

    def finish(self) -> str:
        """Whatever is still held, once the generation has ended."""
        if self.blocked is not None or len(self._raw) == self._checked:
            return ""
        return self._release(len(self._raw))

    def _release(self, cut: int) -> str:
        out = self._rails.run(self._raw[:cut], self._ctx)
        if out.blocked is not None:
            self.blocked = out
            return ""
        self._checked = cut
        new = out.text[self._sent:]
        self._sent = len(out.text)
        return new
