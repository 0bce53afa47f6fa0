"""Tools an agent can call: a name, a description, typed arguments, and a function.

A tool's arguments are a pydantic model, so the same definition gives the JSON schema the
model is constrained to (and that OpenAI-style clients see) and the validation of what the
model actually sent: a bad argument becomes a message naming the field, never a crash.
Plain typed Python functions become tools with `function_tool` (the Toolformer pattern):
the signature gives the arguments, the docstring the descriptions.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints

import docstring_parser
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from alicerce.errors import InputError
from alicerce.types import Hit

TOOL_NAME_CHARS = 40
OBSERVATION_CHARS = 4000  # what one observation may put in front of the model


class ToolFailed(Exception):
    """A tool's own refusal or failure, with the reason the model (and user) reads."""


@dataclass(frozen=True)
class Observation:
    """What a call gave back: text for the model; the passages a search found (numbered
    by the agent across the run, so the answer can cite them)."""

    text: str
    passages: tuple[Hit, ...] = ()
    error: bool = False


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    args: type[BaseModel]
    fn: Callable[..., Any]
    timeout_s: float | None = None  # the step's tool_timeout_s when None
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. the collection a search uses
    needs_run: bool = False  # platform tools get the run (its trace, depth) as `run`

    def schema(self) -> dict[str, Any]:
        """The arguments' JSON schema, without pydantic's titles (noise for a model)."""
        schema: dict[str, Any] = _untitled(self.args.model_json_schema())
        return schema

    def check(self, args: Any) -> BaseModel:
        """The validated arguments, or ToolFailed saying which field is wrong and why."""
        if not isinstance(args, dict):
            raise ToolFailed(f"the arguments of {self.name} must be a JSON object")
        try:
            return self.args.model_validate(args)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()[:5])
            raise ToolFailed(f"bad arguments for {self.name}: {problems}. It takes: "
                             f"{json.dumps(self.schema().get('properties', {}))}") from None

    def call(self, args: BaseModel, run: Any = None) -> Observation:
        out = self.fn(**dict(args), **({"run": run} if self.needs_run else {}))
        if isinstance(out, Observation):
            return out
        return Observation(out if isinstance(out, str)
                           else json.dumps(out, ensure_ascii=False, default=str))


def function_tool(fn: Callable[..., Any], name: str = "", description: str = "",
                  timeout_s: float | None = None) -> Tool:
    """A tool from a typed function: parameters need type hints; the docstring's first
    paragraph describes the tool and its Args section the parameters."""
    doc = docstring_parser.parse(inspect.getdoc(fn) or "")
    described = {p.arg_name: p.description or "" for p in doc.params}
    hints = get_type_hints(fn)
    fields: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise InputError(f"tool {fn.__name__}: *args/**kwargs cannot be described "
                             "to a model", hint="give each parameter a name and a type")
        if p.name not in hints:
            raise InputError(f"tool {fn.__name__}: parameter {p.name!r} has no type hint",
                             hint="annotate it (str, int, float, bool, list[str], ...)")
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (hints[p.name], Field(default, description=described.get(p.name)))
    model = create_model(f"{fn.__name__}_args", __config__=ConfigDict(extra="forbid"),
                         **fields)
    text = " ".join(x for x in (doc.short_description, doc.long_description) if x)
    return Tool(check_name(name or fn.__name__), description or text or fn.__name__, model,
                fn, timeout_s)


def check_name(name: str) -> str:
    if (not name or len(name) > TOOL_NAME_CHARS
            or not all(c.isalnum() or c == "_" for c in name) or not name[0].isalpha()):
        raise InputError(f"{name!r} is not a usable tool name",
                         hint=f"letters, digits and '_', starting with a letter, up to "
                              f"{TOOL_NAME_CHARS}")
    if name == "final_answer":
        raise InputError("final_answer is the agent's own action, not a tool name",
                         hint="name the tool otherwise")
    return name


def strict(**fields: Any) -> type[BaseModel]:
    """An argument model for a built-in tool (unknown arguments refused)."""
    return create_model("args", __config__=ConfigDict(extra="forbid"), **fields)


def cut(text: str, limit: int = OBSERVATION_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _untitled(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _untitled(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_untitled(v) for v in schema]
    return schema


def describe(tools: Mapping[str, Tool]) -> list[dict[str, Any]]:
    """The tools as a prompt lists them: `name(arg: type — description, ...)`, shorter
    and clearer to a small model than the JSON schema its decoding is held to."""
    out = []
    for t in tools.values():
        schema = t.schema()
        required = set(schema.get("required", []))
        params = []
        for name, p in schema.get("properties", {}).items():
            kind = p.get("type") or "/".join(
                str(o.get("type")) for o in p.get("anyOf", []) if o.get("type") != "null")
            if "enum" in p:
                kind = "|".join(str(v) for v in p["enum"])
            desc = f" — {p['description']}" if p.get("description") else ""
            params.append(f"{name}{'' if name in required else '?'}: {kind}{desc}")
        out.append({"name": t.name, "description": t.description,
                    "args": "; ".join(params) or "none"})
    return out
