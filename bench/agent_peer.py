"""The peer for bench/agent.py: smolagents' ToolCallingAgent with the same model, served by
Alicerce's OpenAI endpoint (tools as OpenAI tool calls, decoded under their schema), and
the same tools (the handbook search, the calculator, the dates tool) wrapped as smolagents
tools. Needs `pip install 'smolagents[openai]'` (the `test` extra has it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from alicerce import Alicerce
from alicerce.tools.base import Tool
from alicerce.tools.calculator import calculator
from alicerce.tools.dates import dates

_TYPES = {"string": "string", "integer": "integer", "number": "number",
          "boolean": "boolean", "object": "object", "array": "array"}


def handbook_search(alc: Alicerce, collection: str, k: int = 3) -> Callable[[str], str]:
    def search(query: str) -> str:
        hits = alc.search(query, collection, k=k)
        return "\n\n".join(f"[{i}] {h.title} — {h.section}\n{h.text}"
                           for i, h in enumerate(hits, 1)) or "No results."
    return search


def smol_tool(tool: Tool, fn: Callable[..., str] | None = None) -> Any:
    """One of ours as a smolagents Tool (same name, description and arguments)."""
    from smolagents import Tool as SmolTool

    schema = tool.schema()
    required = set(schema.get("required", []))
    inputs: dict[str, dict[str, Any]] = {}
    for name, p in schema.get("properties", {}).items():
        kind = p.get("type") or next((o["type"] for o in p.get("anyOf", [])
                                      if o.get("type") != "null"), "string")
        inputs[name] = {"type": _TYPES.get(kind, "any"),
                        "description": p.get("description") or name}
        if name not in required:
            inputs[name]["nullable"] = True
    call = fn or (lambda **kw: tool.call(tool.check(
        {k: v for k, v in kw.items() if v is not None})).text)

    def forward(self: Any, **kwargs: Any) -> str:
        try:
            return call(**kwargs)
        except Exception as exc:  # the peer sees errors as text, like ours
            return f"Error: {exc}"

    cls = type(f"{tool.name}_tool", (SmolTool,), {
        "name": tool.name, "description": tool.description, "inputs": inputs,
        "output_type": "string", "forward": forward, "skip_forward_signature_validation": True})
    return cls()


def run_peer(alc: Alicerce, base: str, key: str, model: str, tasks: list[dict[str, Any]],
             score: Callable[[str, Any], float], max_steps: int = 6) -> dict[str, Any]:
    from smolagents import OpenAIServerModel, ToolCallingAgent

    from alicerce.tools.base import strict

    search = Tool("search", "Searches the HR handbook and returns numbered passages.",
                  strict(query=(str, ...)), lambda query: "")
    tools = [smol_tool(search, handbook_search(alc, "handbook")), smol_tool(calculator()),
             smol_tool(dates({}))]
    rows = []
    for t in tasks:
        agent = ToolCallingAgent(tools=tools, model=OpenAIServerModel(
            model_id=model, api_base=f"{base}/v1", api_key=key), max_steps=max_steps,
            verbosity_level=0)
        t0 = time.perf_counter()
        try:
            answer = str(agent.run(t["inputs"]["question"]))
        except Exception as exc:  # a peer's crash is a failed task, reported
            answer = f"(failed: {type(exc).__name__}: {exc})"
        secs = time.perf_counter() - t0
        steps = sum(1 for s in agent.memory.steps if type(s).__name__ == "ActionStep")
        ok = score(answer, t["expected"]["answer"]["contains"])
        rows.append({"id": t["id"], "ok": ok, "steps": steps, "s": secs,
                     "answer": answer[:160]})
        print(f"  {t['id']} ok={ok:.0f} steps={steps} {secs:5.1f}s {answer[:100]!r}",
              flush=True)
    return {"rows": rows}
