"""The types of chain values: what a declared input, a step's output or a reference into
it holds, and whether one may be mapped where another is wanted (checked at deploy)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema

from alicerce.chains.spec import ChainSpec, Condition, ValueType
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


def holds(c: Condition, v: Any) -> bool:
    op, want = c.operator()
    tests: dict[str, Callable[[], bool]] = {
        "equals": lambda: v == want,
        "not_equals": lambda: v != want,
        "in": lambda: v in want,
        "contains": lambda: isinstance(v, (str, list)) and want in v,
        "gt": lambda: isinstance(v, (int, float)) and v > want,
        "lt": lambda: isinstance(v, (int, float)) and v < want,
        "exists": lambda: (v is not None) == want,
    }
    return tests[op]()


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,),
    "object": (dict,), "list": (list,), "passages": (list,)}


def check_inputs(spec: ChainSpec, given: Mapping[str, Any],
                 max_chars: int | None) -> dict[str, Any]:
    """The inputs with defaults filled, or an InputError naming what is wrong, before any
    work is done."""
    unknown = sorted(set(given) - set(spec.inputs))
    if unknown:
        raise InputError(f"unknown input(s): {', '.join(unknown)}",
                         hint="this app takes: " + ", ".join(spec.inputs))
    out: dict[str, Any] = {}
    for name, decl in spec.inputs.items():
        if name not in given or given[name] is None:
            if decl.required and decl.default is None:
                raise InputError(f"the input {name!r} is missing",
                                 hint=f"give {name} ({decl.type}"
                                      f"{': ' + decl.description if decl.description else ''})")
            out[name] = decl.default
            continue
        v = given[name]
        kinds = _PY_TYPES.get(decl.type)
        wrong = kinds is not None and (not isinstance(v, kinds) or (
            isinstance(v, bool) and decl.type in ("number", "integer")))
        if wrong:
            raise InputError(f"the input {name!r} must be {decl.type}, got "
                             f"{type(v).__name__}", hint=f"send {name} as JSON {decl.type}")
        if decl.type == "string" and not v.strip():
            raise InputError(f"the input {name!r} is empty", hint="give a non-empty text")
        out[name] = v
    size = len(json.dumps(out, ensure_ascii=False, default=str)) if max_chars else 0
    if max_chars is not None and size > max_chars:
        raise InputError(f"the inputs are {size} characters, over the limit of {max_chars}",
                         hint="send less text, or raise max_chain_input_chars")
    return out


def parse_json(text: str, schema: dict[str, Any]) -> tuple[Any, str]:
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg} at character {exc.pos})"
    try:
        jsonschema.validate(parsed, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "top level"
        return None, f"at {where}: {exc.message}"
    return parsed, ""
