"""Hallucination rail: an answer whose claims the retrieved passages do not support is
replaced (by the abstention message, by default) or flagged. It is the evaluation's
groundedness check (numbers, names and words of each claim against the passages), so a
live verdict and an evaluation score mean the same thing; the judge part is left out here
because it costs a model call per answer.

With `details` (the default) one invented detail is enough: a page the sources do not
have, a figure they do not state, or, when the answer is in the sources' language, a name
they never mention. An averaged score let an answer with one wrong figure among correct
words pass (bench/invented.py: 5 of 21 changed figures caught before, docs/benchmarks.md).
Across languages names are translated ("Política de férias" is "Vacation policy"), so
there they only lower the score."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from alicerce.guard.base import Action, Context, Verdict
from alicerce.language import detect
from alicerce.metrics.grounding import check

_PLACEHOLDER = re.compile(r"<[A-Z_]+?(?:_\d+)?>")  # left by the PII rail: not a claim
_FIGURE = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass
class GroundingGuard:
    name: str = "grounding"
    action: Action = "block"
    min: float = 0.6
    details: bool = True

    def check(self, text: str, ctx: Context) -> Verdict:
        t0 = time.perf_counter()
        if not ctx.sources:  # an abstention or a refusal: nothing is claimed
            return Verdict(self.name, "allow", 1.0, "", 0.0, text)
        g = check(_PLACEHOLDER.sub("", text), ctx.sources, pages=ctx.pages)
        invented = self._invented(text, ctx, g.unsupported) if self.details else []
        fired = g.score < self.min or bool(invented)
        reason = ((f"groundedness {g.score:.2f} below {self.min}" if g.score < self.min
                   else f"invented: {', '.join(invented[:5])}")
                  + (f"; not in the sources: {', '.join(g.unsupported[:5])}"
                     if g.unsupported else "")) if fired else ""
        return Verdict(self.name, self.action if fired else "allow", g.score, reason,
                       (time.perf_counter() - t0) * 1000, text,
                       details={"lexical": g.lexical, "facts": g.facts,
                                "unsupported": list(g.unsupported), "invented": invented})

    @staticmethod
    def _invented(text: str, ctx: Context, unsupported: tuple[str, ...]) -> list[str]:
        """The unsupported details that count alone: pages and figures always, names when
        the answer is written in the sources' language."""
        same = detect(text) == detect(" ".join(ctx.sources))
        return [u for u in unsupported if u.startswith("page ") or _FIGURE.fullmatch(u)
                or same]
