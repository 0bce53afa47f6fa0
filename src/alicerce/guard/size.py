"""The cheapest rail, first in line: refuse oversized inputs before any model sees them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from alicerce.guard.base import Action, Context, Verdict


@dataclass
class SizeGuard:
    name: str = "size"
    action: Action = "block"
    max_chars: int = 2000
    max_lines: int = 200

    def check(self, text: str, ctx: Context) -> Verdict:
        t0 = time.perf_counter()
        lines = text.count("\n") + 1
        fired = len(text) > self.max_chars or lines > self.max_lines
        reason = (f"{len(text)} characters / {lines} lines, over {self.max_chars} / "
                  f"{self.max_lines}") if fired else ""
        return Verdict(self.name, self.action if fired else "allow",
                       min(1.0, len(text) / self.max_chars), reason,
                       (time.perf_counter() - t0) * 1000, text)
