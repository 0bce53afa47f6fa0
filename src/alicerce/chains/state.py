"""What one run of a plan accumulates besides its values: tokens, rails' verdicts and
redactions, a stop by a rail, and for a question (RAG) the turn being answered."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from alicerce.types import Citation, Hit, Message, TokenLogprob, Usage


@dataclass(frozen=True)
class Stop:
    """A rail that stopped the run: its step, stage and name, and how the reply is replaced
    (an abstention or a refusal)."""

    step: str
    stage: str
    rail: str
    replace: Literal["abstain", "refuse"] = "refuse"


@dataclass
class Turn:
    """A question being answered from documents: what the grounded steps decide on the way,
    read back to build the Answer."""

    question: str  # as the rails left it
    language: str = ""  # asked for; "" detects it from the question
    stream: bool = True
    chat: bool = False  # a chat turn reports its standalone question
    canary: str = ""
    t0: float = field(default_factory=time.perf_counter)
    query: str = ""  # what retrieval and the model saw (the standalone question)
    sources: tuple[Hit, ...] = ()
    messages: tuple[Message, ...] = ()
    citations: tuple[Citation, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    abstained: bool = False
    timings: dict[str, float] = field(default_factory=dict)

    def ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000


@dataclass
class RunState:
    usage: Usage = field(default_factory=Usage)
    stop: Stop | None = None
    json_tries: list[int] = field(default_factory=list)  # replies each JSON step needed
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    redactions: dict[str, str] = field(default_factory=dict)
    turn: Turn | None = None
    depth: int = 0  # apps an agent's ask_app tool runs are one level deeper
    agents: list[dict[str, Any]] = field(default_factory=list)  # each agent step's summary

    def add(self, usage: Usage) -> None:
        self.usage += usage
