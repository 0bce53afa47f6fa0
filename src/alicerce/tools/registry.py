"""The tools an agent step may name: built-ins configured by their options, and plugins.

Plugins are typed functions (or ready Tools) published under the entry-point group
`alicerce.tools`, or registered in a process with `Alicerce.use_tool`; a function becomes a
tool through its signature and docstring (base.function_tool). `search` and `ask_app` use
the platform itself and are built by the agent (chains/agent_tools.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from alicerce.errors import InputError
from alicerce.tools.base import Tool, function_tool
from alicerce.tools.calculator import calculator
from alicerce.tools.dates import dates
from alicerce.tools.http import http_get
from alicerce.tools.sql import sql

Factory = Callable[[dict[str, Any]], Tool]
BUILTIN: dict[str, Factory] = {
    "calculator": lambda options: calculator(),
    "dates": dates,
    "sql": sql,
    "http_get": http_get,
}
PLATFORM = ("search", "ask_app")  # built by the agent: they run the platform's own steps


def plugins() -> dict[str, Tool]:
    """Tools other packages publish (entry points `alicerce.tools`)."""
    found: dict[str, Tool] = {}
    for ep in entry_points(group="alicerce.tools"):
        obj = ep.load()
        tool = obj if isinstance(obj, Tool) else function_tool(obj, ep.name)
        found[tool.name] = tool
    return found


def known(extra: Mapping[str, Tool]) -> list[str]:
    return sorted({*BUILTIN, *PLATFORM, *extra})


def build(kind: str, options: dict[str, Any], extra: Mapping[str, Tool]) -> Tool:
    """A configured built-in or a plugin; an InputError names what is wrong."""
    if kind in BUILTIN:
        try:
            return BUILTIN[kind](dict(options))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                                 for e in exc.errors()[:5])
            raise InputError(f"tool {kind}: options: {problems}",
                             hint="see docs/agents.md for each tool's options") from None
    if kind in extra:
        if options:
            raise InputError(f"tool {kind} is a plugin function; it takes no options",
                             hint="drop options")
        return extra[kind]
    raise InputError(f"no tool named {kind!r}", hint="known: " + ", ".join(known(extra)))
