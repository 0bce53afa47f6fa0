"""A compiled plan as plain rows (steps in run order, nested for branches and loops): what
`apps show --plan` prints, the HTTP API returns and the console draws."""

from __future__ import annotations

from typing import Any

from alicerce.chains.plan import Node


def plan_rows(nodes: tuple[Node, ...]) -> list[dict[str, Any]]:
    rows = []
    for n in nodes:
        s = n.step
        row: dict[str, Any] = {"id": s.id, "kind": s.kind,
                               "outputs": {k: t.type for k, t in n.outputs.items()}}
        for attr in ("stage", "model", "adapter", "model_identity", "prompt", "collections",
                     "k", "step_back", "reranker", "function", "decoding"):
            if getattr(s, attr, None):
                row[attr] = getattr(s, attr)
        rails = getattr(s, "rails", None)
        if rails:
            row["rails"] = [r.get("rail") if isinstance(r, dict) else r for r in rails]
        tools = getattr(s, "tools", None)
        if tools:
            row["tools"] = [t.name or t.tool for t in tools]
            row["limits"] = {k: getattr(s, k) for k in ("max_steps", "tool_timeout_s",
                                                         "budget_s", "decide")}
        grounded = getattr(s, "grounded", None)
        if grounded is not None:
            row["grounded"] = grounded.model_dump()
        inputs = getattr(s, "inputs", None)
        if inputs:
            row["inputs"] = inputs
        if n.body:
            row["then" if s.kind == "branch" else "steps"] = plan_rows(n.body)
        if n.other:
            row["else"] = plan_rows(n.other)
        rows.append(row)
    return rows
