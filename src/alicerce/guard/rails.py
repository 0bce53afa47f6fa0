"""Rails in order for one stage: each sees the text the previous one left (redactions carry
forward), a block stops the stage, and a rail that raises becomes a verdict per its
`on_error` (closed = block, open = allow), so a broken guard never breaks a request."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from alicerce.guard.base import Action, Context, Guard, Stage, Verdict

log = logging.getLogger("alicerce.guard")
OnError = Literal["closed", "open"]
Replace = Literal["refuse", "abstain"]


@dataclass(frozen=True)
class Rail:
    guard: Guard
    on_error: OnError = "closed"
    replace: Replace = "refuse"


@dataclass(frozen=True)
class Outcome:
    """The text after the stage, every verdict, the blocking one if any, and the
    reversible-redaction mapping gathered on the way."""

    text: str
    verdicts: tuple[Verdict, ...]
    blocked: Verdict | None = None
    replace: Replace = "refuse"
    mapping: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Rails:
    stage: Stage
    rails: Sequence[Rail] = ()

    def __bool__(self) -> bool:
        return bool(self.rails)

    def names(self) -> list[str]:
        return [r.guard.name for r in self.rails]

    def run(self, text: str, ctx: Context, stop: bool = True) -> Outcome:
        """`stop=False` runs every rail even after a block (to report them all)."""
        verdicts: list[Verdict] = []
        first: tuple[Verdict, Replace] | None = None
        mapping: dict[str, str] = {}
        for rail in self.rails:
            v = self._one(rail, text, ctx)
            verdicts.append(v)
            mapping.update(v.mapping)
            if v.action == "redact":
                text = v.text
            elif v.action == "block":
                if stop:
                    return Outcome(text, tuple(verdicts), v, rail.replace, mapping)
                first = first or (v, rail.replace)
        if first is not None:
            return Outcome(text, tuple(verdicts), first[0], first[1], mapping)
        return Outcome(text, tuple(verdicts), None, "refuse", mapping)

    def _one(self, rail: Rail, text: str, ctx: Context) -> Verdict:
        t0 = time.perf_counter()
        try:
            v = rail.guard.check(text, ctx)
        except Exception as exc:  # any failure of a rail is a verdict, never a crash
            log.warning("guard %s failed (%s): %s", rail.guard.name, rail.on_error, exc)
            action: Action = "block" if rail.on_error == "closed" else "allow"
            return Verdict(rail.guard.name, action, 0.0,
                           f"the rail failed and fails {rail.on_error}", _ms(t0), text,
                           self.stage, f"{type(exc).__name__}: {exc}")
        return replace(v, stage=self.stage, latency_ms=_ms(t0))


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
