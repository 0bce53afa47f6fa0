"""OpenAI-style tool calling on models that have no native tool calls, by constrained
decoding.

The bundled GGUF models do not emit llama.cpp's native `tool_calls` (Qwen2.5-Coder writes a
JSON block in its text, SmolLM2 ignores the tools), but a JSON schema that is an `anyOf` of
`{"name": const, "arguments": {...}}` entries always decodes to a valid call. So a request's
`tools` become a system note listing the functions and a reply schema: `{"tool_calls":
[...]}` or `{"content": "..."}` (`auto`), tool calls only (`required`, or one named
function), or free text (`none`). The reply is parsed back into OpenAI's shape; earlier
calls and `role: tool` results in the history are written as the model saw its own.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alicerce.errors import InputError
from alicerce.types import Message

MAX_PARALLEL = 5


@dataclass(frozen=True)
class Function:
    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ToolRequest:
    functions: tuple[Function, ...]
    choice: str  # auto | none | required | a function's name
    parallel: bool = True

    def __post_init__(self) -> None:
        names = [f.name for f in self.functions]
        if len(set(names)) != len(names):
            raise InputError("two tools have the same function name",
                             hint="give each function its own name")
        if self.choice not in ("auto", "none", "required") and self.choice not in names:
            raise InputError(f"tool_choice names {self.choice!r}, which is not in tools",
                             hint="name one of: " + ", ".join(names))

    def schema(self) -> dict[str, Any] | None:
        """What the reply must be; None for `none` (free text)."""
        if self.choice == "none":
            return None
        chosen = [f for f in self.functions
                  if self.choice in ("auto", "required") or f.name == self.choice]
        items = [{"type": "object",
                  "properties": {"name": {"const": f.name},
                                 "arguments": f.parameters or {"type": "object"}},
                  "required": ["name", "arguments"], "additionalProperties": False}
                 for f in chosen]
        single = self.choice not in ("auto", "required") or not self.parallel
        calls = {"type": "object",
                 "properties": {"tool_calls": {
                     "type": "array", "items": items[0] if len(items) == 1 else {"anyOf": items},
                     "minItems": 1, "maxItems": 1 if single else MAX_PARALLEL}},
                 "required": ["tool_calls"], "additionalProperties": False}
        if self.choice != "auto":
            return calls
        text = {"type": "object", "properties": {"content": {"type": "string"}},
                "required": ["content"], "additionalProperties": False}
        return {"anyOf": [calls, text]}

    def note(self) -> str:
        """The system note that tells the model what it may call and how to reply."""
        lines = ["You can call these functions:"]
        for f in self.functions:
            params = json.dumps(f.parameters.get("properties", {}), ensure_ascii=False)
            lines.append(f"- {f.name}: {f.description or f.name} Parameters: {params}")
        if self.choice == "none":
            lines.append("Do not call any function now: answer in plain text.")
        elif self.choice == "auto":
            lines.append('To call functions reply {"tool_calls": [{"name": ..., "arguments": '
                         '{...}}]}; to answer the user directly reply {"content": "..."}. '
                         "Call a function only when the answer needs it.")
        else:
            lines.append('Reply {"tool_calls": [{"name": ..., "arguments": {...}}]}.')
        return "\n".join(lines)


def with_tools(messages: Sequence[Message], request: ToolRequest) -> list[Message]:
    out = list(messages)
    if out and out[0].role == "system":
        out[0] = Message("system", f"{out[0].content}\n\n{request.note()}")
    else:
        out.insert(0, Message("system", request.note()))
    return out


def history(messages: Sequence[dict[str, Any]]) -> list[Message]:
    """OpenAI messages, tool calls and results included, as the model's own turns: an
    assistant's calls as the JSON it would have written, a tool's result as a user turn
    naming the function."""
    names: dict[str, str] = {}
    out: list[Message] = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "assistant" and m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                names[c["id"]] = c["function"]["name"]
                calls.append({"name": c["function"]["name"],
                              "arguments": _arguments(c["function"]["arguments"])})
            out.append(Message("assistant", json.dumps({"tool_calls": calls},
                                                       ensure_ascii=False)))
        elif role == "tool":
            name = names.get(m.get("tool_call_id") or "", "")
            if not name:
                raise InputError(f"a tool message answers tool_call_id "
                                 f"{m.get('tool_call_id')!r}, which no earlier assistant "
                                 "message called", hint="send the assistant message with "
                                                        "its tool_calls before the results")
            out.append(Message("user", f"Result of {name}: {content}"))
        else:
            out.append(Message("system" if role == "developer" else role, content))
    return out


def parse(text: str) -> tuple[str | None, list[ToolCall]]:
    """(content, calls) from the model's reply; text that is not the JSON shape is plain
    content (a backend that could not constrain it)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text, []
    if isinstance(data, dict) and isinstance(data.get("tool_calls"), list):
        calls = [ToolCall(f"call_{secrets.token_hex(12)}", str(c.get("name")),
                          json.dumps(c.get("arguments", {}), ensure_ascii=False))
                 for c in data["tool_calls"] if isinstance(c, dict) and c.get("name")]
        if calls:
            return None, calls
    if isinstance(data, dict) and isinstance(data.get("content"), str):
        return data["content"], []
    return text, []


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw
