"""What every rail shares: the verdict it returns, what it may look at, and the protocol.

A rail never raises on content: it returns a Verdict. When a rail itself breaks (a model
that will not load, a bug), the pipeline turns the exception into a verdict that fails
closed (block) or open (allow) as configured, and says so, so a guard can never crash a
request or pass silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Action = Literal["allow", "redact", "flag", "block"]
Stage = Literal["input", "context", "output"]
ACTIONS: tuple[Action, ...] = ("allow", "redact", "flag", "block")

REFUSE = {"pt": "Não posso ajudar com esse pedido.",
          "en": "I can't help with that request."}


@dataclass(frozen=True)
class Verdict:
    """One rail's decision on one text. `text` is the text after the rail (redacted when
    `action` is redact, else unchanged); `score` is the rail's own measure in [0, 1]
    (probability of injection, groundedness, ...); `error` is set when the rail failed
    and the verdict comes from its on_error setting. `mapping` (reversible redaction's
    placeholder → original) goes back to the caller only: never into traces or logs."""

    rail: str
    action: Action
    score: float = 0.0
    reason: str = ""
    latency_ms: float = 0.0
    text: str = ""
    stage: Stage = "input"
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    mapping: dict[str, str] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = {"rail": self.rail, "stage": self.stage, "action": self.action,
               "score": round(self.score, 4), "reason": self.reason,
               "latency_ms": round(self.latency_ms, 3)}
        if self.error:
            out["error"] = self.error
        if self.details:
            out["details"] = self.details
        return out


@dataclass(frozen=True)
class Context:
    """What a rail may need besides the text: the question, the passages the answer was
    built from (grounding), the system prompt and its canary (leak detection)."""

    question: str = ""
    language: str = "en"
    sources: Sequence[str] = ()
    system: str = ""
    canary: str = ""
    pages: Sequence[int] = ()  # the sources' page numbers: an answer may cite only these


class Guard(Protocol):
    """A rail: `check` looks at a text and returns a verdict without raising on content."""

    name: str
    action: Action

    def check(self, text: str, ctx: Context) -> Verdict: ...

