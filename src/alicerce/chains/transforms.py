"""Transforms: named Python functions a chain's `transform` step calls.

Code never goes inside a YAML spec (a spec is data anyone with deploy rights can write);
a transform is installed code, registered under a name with typed inputs and outputs so
the chain's wiring is checked at deploy like any other step's. Packages add their own
through the `alicerce.transforms` entry-point group (each entry point names a `Transform`);
a process can add more with `Alicerce.use_transform`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from alicerce.chains.spec import ValueType

log = logging.getLogger("alicerce")


@dataclass(frozen=True)
class Transform:
    """`fn(**inputs)` returns a mapping holding every name in `outputs`."""

    name: str
    fn: Callable[..., Mapping[str, Any]]
    inputs: Mapping[str, ValueType]
    outputs: Mapping[str, ValueType]
    description: str = ""


def _join(texts: list[Any], separator: str) -> dict[str, Any]:
    return {"text": separator.join(str(t) for t in texts if t is not None)}


def _passages_text(passages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"text": "\n\n".join(f"[{p['n']}] {p['title']}\n{p['text']}" for p in passages)}


def _count_labels(items: list[Any], field: str) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for it in items:
        label = it.get(field) if isinstance(it, dict) else None
        if label is not None:
            counts[str(label)] = counts.get(str(label), 0) + 1
    top = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0] if counts else ""
    return {"counts": counts, "top": top}


def _to_json(value: Any) -> dict[str, Any]:
    return {"text": json.dumps(value, ensure_ascii=False, sort_keys=True)}


def _truncate(text: str, max_chars: int) -> dict[str, Any]:
    return {"text": text[:max_chars], "truncated": len(text) > max_chars}


BUILTIN: tuple[Transform, ...] = (
    Transform("join", _join, {"texts": "list", "separator": "string"}, {"text": "string"},
              "Join a list of texts with a separator."),
    Transform("passages_text", _passages_text, {"passages": "passages"}, {"text": "string"},
              "Numbered passages as one text ([n] title, then the passage)."),
    Transform("count_labels", _count_labels, {"items": "list", "field": "string"},
              {"counts": "object", "top": "string"},
              "How often each value of `field` occurs in a list of objects; the most common."),
    Transform("to_json", _to_json, {"value": "any"}, {"text": "string"},
              "Any value as JSON text."),
    Transform("truncate", _truncate, {"text": "string", "max_chars": "integer"},
              {"text": "string", "truncated": "boolean"}, "The first max_chars characters."),
)


def _discover() -> dict[str, Transform]:
    found = {t.name: t for t in BUILTIN}
    for ep in entry_points(group="alicerce.transforms"):
        try:
            t = ep.load()
        except Exception as exc:  # a broken plugin must not take the platform down
            log.warning("transform plugin %s not loaded: %s", ep.name, exc)
            continue
        if isinstance(t, Transform):
            found[t.name] = t
        else:
            log.warning("transform plugin %s is not a Transform", ep.name)
    return found


TRANSFORMS: dict[str, Transform] = _discover()
