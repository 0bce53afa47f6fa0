"""Hallucination rail: an answer whose claims the retrieved passages do not support is
replaced (by the abstention message, by default) or flagged. It is the evaluation's
groundedness check (numbers, names and words of each claim against the passages), so a
live verdict and an evaluation score mean the same thing; the judge part is left out here
because it costs a model call per answer."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from alicerce.guard.base import Action, Context, Verdict
from alicerce.metrics.grounding import check

_PLACEHOLDER = re.compile(r"<[A-Z_]+?(?:_\d+)?>")  # left by the PII rail: not a claim


@dataclass
class GroundingGuard:
    name: str = "grounding"
    action: Action = "block"
    min: float = 0.6

    def check(self, text: str, ctx: Context) -> Verdict:
        t0 = time.perf_counter()
        if not ctx.sources:  # an abstention or a refusal: nothing is claimed
            return Verdict(self.name, "allow", 1.0, "", 0.0, text)
        g = check(_PLACEHOLDER.sub("", text), ctx.sources, pages=ctx.pages)
        fired = g.score < self.min
        reason = (f"groundedness {g.score:.2f} below {self.min}"
                  + (f"; not in the sources: {', '.join(g.unsupported[:5])}"
                     if g.unsupported else "")) if fired else ""
        return Verdict(self.name, self.action if fired else "allow", g.score, reason,
                       (time.perf_counter() - t0) * 1000, text,
                       details={"lexical": g.lexical, "facts": g.facts,
                                "unsupported": list(g.unsupported)})
