"""The `guards:` section of an app spec: parsed into one normal form (so an app's identity
does not depend on how the YAML was spelled) and built into rails.

    guards:
      input:  [size, pii: redact, injection: block, topics: {deny: [politics]}]
      context: [injection]          # retrieved passages: flagged ones are dropped
      output: [pii: redact, toxicity: block, grounding: {min: 0.6, on_fail: abstain}, canary]
      on_error: closed              # default for every rail; a rail may override it

An item is a rail name, `name: action`, or `name: {options}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from alicerce.guard.base import Action, Guard, Stage
from alicerce.guard.pii import ENTITIES
from alicerce.guard.rails import OnError, Rail, Rails, Replace

if TYPE_CHECKING:
    from alicerce.config import Settings

STAGES = ("input", "context", "output")
# rail -> (stages it runs in, actions it may take, its default action, extra options)
RAILS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str, dict[str, type]]] = {
    "size": (("input",), ("block", "flag"), "block", {"max_chars": int, "max_lines": int}),
    "pii": (("input", "context", "output"), ("redact", "block", "flag"), "redact",
            {"entities": list, "threshold": float, "reversible": bool}),
    "injection": (("input", "context"), ("block", "flag"), "block", {"threshold": float}),
    "harmful": (("input",), ("block", "flag"), "block", {"threshold": float}),
    "toxicity": (("input", "output"), ("block", "flag"), "block", {"threshold": float}),
    "topics": (("input", "output"), ("block", "flag"), "block",
               {"deny": list, "allow": list, "threshold": float}),
    "grounding": (("output",), ("abstain", "block", "flag"), "abstain",
                  {"min": float, "details": bool}),
    "canary": (("output",), ("block", "flag"), "block", {"min_words": int}),
}
# The rails that can judge a partial answer, so a stream is checked as it goes.
STREAMABLE = ("pii", "toxicity", "canary", "topics")


def normalise(section: dict[str, Any]) -> dict[str, Any]:
    """The section in normal form (which it also accepts, so settings re-validate); a
    ValueError naming the field on any problem."""
    if not isinstance(section, dict):
        raise ValueError("guards must be a mapping of input/context/output lists")
    unknown = set(section) - {*STAGES, "on_error"}
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)}; use input, context, output, "
                         "on_error")
    default = section.get("on_error", "closed")
    if default not in ("closed", "open"):
        raise ValueError("on_error must be closed or open")
    out: dict[str, Any] = {"on_error": default}
    for stage in STAGES:
        items = section.get(stage) or []
        if not isinstance(items, list):
            raise ValueError(f"{stage} must be a list of rails")
        rails = [_item(stage, item, default) for item in items]
        names = [r["rail"] for r in rails]
        if len(set(names)) != len(names):
            raise ValueError(f"{stage}: a rail appears twice")
        out[stage] = rails
    return out


def _item(stage: str, item: Any, default: str) -> dict[str, Any]:
    opts: dict[str, Any]
    if isinstance(item, str):
        name, opts = item, {}
    elif isinstance(item, dict) and isinstance(item.get("rail"), str):  # the normal form
        name, opts = item["rail"], {k: v for k, v in item.items() if k != "rail"}
    elif isinstance(item, dict) and len(item) == 1:
        name, value = next(iter(item.items()))
        opts = {"action": value} if isinstance(value, str) else value
        if not isinstance(opts, dict):
            raise ValueError(f"{stage}: {name}: give an action or a mapping of options")
    else:
        raise ValueError(f"{stage}: each rail is a name, 'name: action' or 'name: {{...}}'")
    if name not in RAILS:
        raise ValueError(f"{stage}: unknown rail {name!r}; rails: {', '.join(RAILS)}")
    stages, actions, action, extra = RAILS[name]
    if stage not in stages:
        raise ValueError(f"{stage}: the {name} rail runs on {', '.join(stages)} only")
    opts = dict(opts)
    if name == "grounding" and "on_fail" in opts:
        opts["action"] = opts.pop("on_fail")
    rail: dict[str, Any] = {"rail": name, "action": opts.pop("action", action),
                            "on_error": opts.pop("on_error", default)}
    if rail["action"] not in actions:
        raise ValueError(f"{stage}: {name}: action must be one of {', '.join(actions)}")
    if rail["on_error"] not in ("closed", "open"):
        raise ValueError(f"{stage}: {name}: on_error must be closed or open")
    for key, value in opts.items():
        kind = extra.get(key)
        if kind is None:
            raise ValueError(f"{stage}: {name}: unknown option {key!r}"
                             + (f"; options: {', '.join(extra)}" if extra else ""))
        rail[key] = _option(stage, name, key, value, kind)
    return rail


def _option(stage: str, name: str, key: str, value: Any, kind: type) -> Any:
    where = f"{stage}: {name}: {key}"
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not 0.0 <= value <= 1.0:
            raise ValueError(f"{where} must be a number from 0 to 1")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{where} must be a whole number of at least 1")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false")
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip()
                                              for v in value):
        raise ValueError(f"{where} must be a list of strings")
    if key == "entities" and (bad := [v for v in value if v not in ENTITIES]):
        raise ValueError(f"{where}: unknown {bad}; known: {', '.join(ENTITIES)}")
    return list(value)


@dataclass(frozen=True)
class Guards:
    """An app's rails, built: input, context (retrieved passages), output."""

    input: Rails = field(default_factory=lambda: Rails("input"))
    context: Rails = field(default_factory=lambda: Rails("context"))
    output: Rails = field(default_factory=lambda: Rails("output"))

    def __bool__(self) -> bool:
        return bool(self.input or self.context or self.output)

    def streamable(self) -> Rails:
        """The output rails that can judge a partial answer."""
        return Rails("output", [r for r in self.output.rails
                                if r.guard.name in STREAMABLE])

    def uses_canary(self) -> bool:
        return "canary" in self.output.names()


def build(section: dict[str, Any], settings: Settings) -> Guards:
    """Rails from a normal-form section; models load on first use and are shared."""
    if not section:
        return Guards()
    built = {stage: Rails(cast(Stage, stage), [_rail(r, settings)
                                               for r in section.get(stage, [])])
             for stage in STAGES}
    return Guards(built["input"], built["context"], built["output"])


def _rail(spec: dict[str, Any], settings: Settings) -> Rail:
    from alicerce.embed import get_embedder
    from alicerce.guard.canary import CanaryGuard
    from alicerce.guard.classify import ClassifierGuard
    from alicerce.guard.grounding import GroundingGuard
    from alicerce.guard.pii import PiiGuard
    from alicerce.guard.size import SizeGuard
    from alicerce.guard.topics import DEFAULT_THRESHOLD, TopicGuard

    name = spec["rail"]
    action = cast(Action, "block" if spec["action"] == "abstain" else spec["action"])
    guard: Guard
    if name == "size":
        guard = SizeGuard(action=action,
                          max_chars=spec.get("max_chars", settings.max_question_chars),
                          max_lines=spec.get("max_lines", 200))
    elif name == "pii":
        guard = PiiGuard(action=action, entities=tuple(spec.get("entities", ENTITIES)),
                         threshold=spec.get("threshold", 0.5),
                         reversible=spec.get("reversible", False))
    elif name in ("injection", "toxicity", "harmful"):
        guard = ClassifierGuard(name, get_embedder("e5-small", settings), action,
                                spec.get("threshold"))
    elif name == "topics":
        guard = TopicGuard(get_embedder("e5-small", settings), spec.get("deny", []),
                           spec.get("allow", []), spec.get("threshold", DEFAULT_THRESHOLD),
                           action=action)
    elif name == "grounding":
        guard = GroundingGuard(action=action, min=spec.get("min", 0.6),
                               details=spec.get("details", True))
    else:
        guard = CanaryGuard(action=action, min_words=spec.get("min_words", 12))
    replace: Replace = "abstain" if spec["action"] == "abstain" else "refuse"
    return Rail(guard, cast(OnError, spec["on_error"]), replace)
