"""A trace's steps as a tree: spans are recorded flat with their start and duration, and a
step that runs inside another's time is its child (the chain runner's steps hold the model
and retrieval calls they make)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 8


@dataclass
class Step:
    name: str
    start_ms: float
    ms: float
    depth: int
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str:
        return str(self.attrs.get("error", ""))


def tree(spans: list[dict[str, Any]]) -> list[Step]:
    """Depth-first order with each step's depth (outer steps before the steps inside them)."""
    ordered = sorted(spans, key=lambda s: (float(s.get("start_ms", 0.0)),
                                           -float(s.get("ms", 0.0))))
    out: list[Step] = []
    ends: list[float] = []
    for s in ordered:
        start, ms = float(s.get("start_ms", 0.0)), float(s.get("ms", 0.0))
        while ends and start >= ends[-1] - 1e-6:
            ends.pop()
        attrs = s.get("attrs")
        out.append(Step(str(s.get("name", "?")), start, ms, min(len(ends), MAX_DEPTH),
                        attrs if isinstance(attrs, dict) else {}))
        ends.append(start + ms)
    return out
