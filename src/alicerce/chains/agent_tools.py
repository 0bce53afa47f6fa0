"""The tools that use the platform itself: `search` (a collection, through the same
retriever RAG uses; the agent then screens and numbers the passages so the answer can cite
them) and `ask_app` (another deployed app, RAG or chain, run on the same runner with its
spans in this trace), and building an agent step's tools once per plan."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from alicerce.chains.citations import interleave
from alicerce.chains.spec import AgentStep, ToolSpec
from alicerce.chains.state import RunState
from alicerce.observe.spans import Recorder
from alicerce.tools import registry
from alicerce.tools.base import Observation, Tool, ToolFailed, strict

if TYPE_CHECKING:
    from alicerce.chains.plan import Plan
    from alicerce.chains.runner import ChainResult, Host

MAX_DEPTH = 3  # an agent asking an app that asks an app...


@dataclass
class ToolRun:
    """What a platform tool sees of the run calling it: never the caller's key."""

    rec: Recorder
    state: RunState
    span: str  # the calling step's span name, for nested spans


Nested = Callable[["Plan", Mapping[str, Any], Recorder, str, int], "ChainResult"]


def search_names(options: Mapping[str, Any]) -> list[str]:
    """A search tool's collections: `collection` is one name or a list of them."""
    value = options["collection"]
    return [str(c) for c in value] if isinstance(value, list) else [str(value)]


def search_tool(host: Host, options: dict[str, Any]) -> Tool:
    names = search_names(options)
    collection = ", ".join(names)
    k, mode = int(options.get("k", 4)), options.get("mode")
    filters = options.get("filters") or None

    def run(query: str, run: ToolRun) -> Observation:
        if not query.strip():
            raise ToolFailed("the query is empty")
        # several collections: their rankings interleaved, as a retrieve step does
        hits = interleave([host.search(query, c, mode=mode, k=k, filters=filters,
                                       spans=run.rec) for c in names])[:k]
        return Observation("", tuple(hits))

    args = strict(query=(str, Field(description="what to look for, in the documents' "
                                                "language", max_length=500)))
    return Tool("search", f"Searches the documents of {collection} and returns numbered "
                "passages to cite.", args, run, meta={"collection": collection},
                needs_run=True)


def ask_app_tool(host: Host, nested: Nested, options: dict[str, Any]) -> Tool:
    app = str(options["app"])

    def run(question: str, run: ToolRun) -> Observation:
        if run.state.depth + 1 >= MAX_DEPTH:
            raise ToolFailed(f"apps may call apps only {MAX_DEPTH} levels deep")
        key, plan = host.app_plan(app)
        texts = [k for k, i in plan.spec.inputs.items() if i.type == "string" and i.required]
        name = "question" if "question" in plan.spec.inputs else (
            texts[0] if len(texts) == 1 else "")
        if not name:
            raise ToolFailed(f"{app} takes {', '.join(plan.spec.inputs)}, not one question")
        child = Recorder()
        try:
            result = nested(plan, {name: question}, child, key, run.state.depth + 1)
        finally:
            offset = (child.started - run.rec.started) * 1000
            run.rec.spans += [dict(sp, name=f"{run.span}.{app}.{sp['name']}",
                                   start_ms=round(sp["start_ms"] + offset, 3))
                              for sp in child.spans]
        run.state.add(result.usage)
        if result.blocked:
            raise ToolFailed(f"{app} refused: a rail ({result.blocked}) stopped it")
        out = result.outputs
        text = out.get("answer", out.get("text"))
        return Observation(text if isinstance(text, str) else str(out))

    args = strict(question=(str, Field(description="the question for that app",
                                       max_length=2000)))
    return Tool("ask_app", f"Asks the app {app} a question and returns its answer.", args,
                run, meta={"app": app}, needs_run=True)


def build_tools(s: AgentStep, host: Host, nested: Nested, plugins: Mapping[str, Tool]
                ) -> dict[str, Tool]:
    """The step's tools under the names the model calls them by."""
    out: dict[str, Tool] = {}
    for t in s.tools:
        tool = _one(t, host, nested, plugins)
        out[t.name or t.tool] = Tool(t.name or t.tool, t.description or tool.description,
                                     tool.args, tool.fn, t.timeout_s or tool.timeout_s,
                                     tool.meta, tool.needs_run)
    return out


def _one(t: ToolSpec, host: Host, nested: Nested, plugins: Mapping[str, Tool]) -> Tool:
    if t.tool == "search":
        return search_tool(host, t.options)
    if t.tool == "ask_app":
        return ask_app_tool(host, nested, t.options)
    return registry.build(t.tool, t.options, plugins)
