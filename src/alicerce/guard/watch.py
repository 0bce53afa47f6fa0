"""Output rails on a stream: text is released a sentence (or a clause) at a time, after the
rails that can judge a partial answer (PII, toxicity, canary, topics) have passed the whole
answer so far. Redactions apply to what is released; a block stops the release, and the
caller cuts the generation and ends the stream with the blocking verdict. The reader waits at
most one sentence, instead of streaming being turned off.

`clause` also releases at a comma and, in a long clause, once 80 characters wait, up to a
whole word at least 40 characters back: short answers are often one sentence, so by sentence
the reader sees the answer only when it is complete (docs/benchmarks.md, "Answer latency").
An identifier the PII rail looks for (a CPF, an e-mail address, a card number or IBAN even
with spaces) is never cut in two, so the rails always judge it whole.
"""

from __future__ import annotations

import re
from typing import Literal

from alicerce.guard.base import Context
from alicerce.guard.rails import Outcome, Rails

Release = Literal["sentence", "clause"]
_BOUNDARY = {"sentence": re.compile(r"[.!?;:](?=\s)|\n"),
             "clause": re.compile(r"[.!?;:,](?=\s)|\n")}
MAX_HELD = {"sentence": 300, "clause": 80}  # characters held when no boundary comes
HOLD_BACK = 40  # by clause, an overflow cut leaves this much unseen: a spaced card number or
# IBAN being written is never cut in two
_SPACE = re.compile(r"\s")


class StreamWatch:
    def __init__(self, rails: Rails, ctx: Context, release: Release = "sentence") -> None:
        self._rails, self._ctx = rails, ctx
        self._boundary, self._max_held = _BOUNDARY[release], MAX_HELD[release]
        self._cut_words = release == "clause"
        self._raw = ""
        self._checked = 0  # raw characters already judged
        self._sent = 0  # characters of the judged (redacted) text already released
        self.blocked: Outcome | None = None

    def feed(self, piece: str) -> str:
        """The text that may be shown now ("" while a sentence is incomplete)."""
        self._raw += piece
        if self.blocked is not None:
            return ""
        ends = [m.end() for m in self._boundary.finditer(self._raw, self._checked)]
        cut = ends[-1] if ends else (self._overflow() if len(self._raw) - self._checked
                                     > self._max_held else 0)
        return self._release(cut) if cut > self._checked else ""

    def _overflow(self) -> int:
        """Where to cut a clause that ran past the limit: its last whitespace (by clause),
        or everything held (by sentence, as before)."""
        if not self._cut_words:
            return len(self._raw)
        end = len(self._raw) - HOLD_BACK
        spaces = [m.start() for m in _SPACE.finditer(self._raw, self._checked, max(0, end))]
        return spaces[-1] if spaces else 0

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
