"""The types of chain values: what a declared input, a step's output or a reference into
it holds, and whether one may be mapped where another is wanted (checked at deploy)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alicerce.chains.spec import ValueType
from alicerce.errors import InputError

# The fields of one retrieved passage (`$item.text` inside a map over passages).
PASSAGE_FIELDS: dict[str, ValueType] = {
    "n": "integer", "text": "string", "title": "string", "section": "string",
    "doc": "string", "chunk_id": "integer", "score": "number", "page": "any",
    "source": "string"}
_JSON_TYPES: dict[str, ValueType] = {"string": "string", "number": "number",
                                     "integer": "integer", "boolean": "boolean",
                                     "object": "object", "array": "list"}


@dataclass(frozen=True)
class Typed:
    """A value's type; `schema` describes an object's fields when known."""

    type: ValueType
    schema: dict[str, Any] | None = None
    passage: bool = False  # an item of a passages list


def compatible(got: ValueType, want: ValueType) -> bool:
    return (got == want or "any" in (got, want) or (got, want) in {
        ("integer", "number"), ("passages", "list")})


def article(t: str) -> str:
    return f"an {t}" if t[0] in "aeiou" else f"a {t}"


def field_type(base: Typed, path: Sequence[str], text: str, where: str) -> Typed:
    """The type of `path` inside a value of type `base` (any when it cannot be known)."""
    cur = base
    for key in path:
        if cur.passage:
            if key not in PASSAGE_FIELDS:
                raise InputError(f"{where}: {text}: a passage has no field {key!r}",
                                 hint="it has: " + ", ".join(PASSAGE_FIELDS))
            cur = Typed(PASSAGE_FIELDS[key])
        elif cur.type == "object" and cur.schema and "properties" in cur.schema:
            props = cur.schema["properties"]
            if key not in props:
                raise InputError(f"{where}: {text}: the schema has no property {key!r}",
                                 hint="it has: " + ", ".join(props))
            sub = props[key] if isinstance(props[key], dict) else {}
            kind = sub.get("type")
            cur = Typed(_JSON_TYPES.get(kind, "any") if isinstance(kind, str) else "any",
                        sub if kind == "object" else None)
        elif cur.type in ("object", "any"):
            cur = Typed("any")
        else:
            raise InputError(f"{where}: {text}: {article(cur.type)} has no field {key!r}")
    return cur


_LITERALS: tuple[tuple[type, ValueType], ...] = (
    (bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "list"),
    (dict, "object"))  # bool first: it is an int too


def literal_type(v: Any) -> ValueType:
    return next((name for kind, name in _LITERALS if isinstance(v, kind)), "any")
