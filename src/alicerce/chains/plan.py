"""A compiled chain: steps in the order their references require, each reference parsed
and type-checked, every output typed. Built once per app version and never changed.

Checking happens here, at deploy: an unknown step or field, a cycle, or a value of the
wrong type for a step's input is an InputError naming the step and the field, so a chain
that deploys cannot fail on its own wiring at run time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from alicerce.chains.spec import (
    AgentStep,
    BranchStep,
    ChainSpec,
    CondenseStep,
    GenerateStep,
    GuardStep,
    MapStep,
    RerankStep,
    RetrieveStep,
    StepSpec,
    TransformStep,
    ValueType,
)
from alicerce.chains.transforms import TRANSFORMS, Transform
from alicerce.chains.values import Typed, article, compatible, field_type, literal_type
from alicerce.errors import InputError
from alicerce.types import Hit

AGENT_OUTPUTS = {"text": Typed("string"), "citations": Typed("list"),
                 "abstained": Typed("boolean"), "status": Typed("string"),
                 "steps": Typed("list"), "sources": Typed("passages")}


@dataclass(frozen=True)
class Ref:
    """`$root.field.path...`: root is `inputs`, a step id, `item` or `index`."""

    text: str
    root: str
    path: tuple[str, ...]

    def get(self, scope: Scope) -> Any:
        if self.root == "index":
            return scope.index
        if self.root == "item":
            value: Any = scope.item
        elif self.root == "inputs":
            value = scope.inputs
        else:
            value = scope.steps.get(self.root)
        for key in self.path:
            value = value.get(key) if isinstance(value, Mapping) else None
        return value


@dataclass
class Scope:
    """The values a reference can see while a chain runs."""

    inputs: dict[str, Any]
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    item: Any = None
    index: int | None = None
    hits: dict[int, Hit] = field(default_factory=dict)  # retrieved chunks behind passages

    def child(self, item: Any = None, index: int | None = None) -> Scope:
        """A nested scope (map item, branch arm): sees everything here, adds its own."""
        return Scope(self.inputs, dict(self.steps), item if index is not None else self.item,
                     index if index is not None else self.index, self.hits)


def value(v: Any, scope: Scope) -> Any:
    return v.get(scope) if isinstance(v, Ref) else v


@dataclass(frozen=True)
class Node:
    """One compiled step."""

    step: StepSpec
    inputs: dict[str, Ref | Any]
    outputs: dict[str, Typed]
    body: tuple[Node, ...] = ()  # map: the per-item steps; branch: `then`
    other: tuple[Node, ...] = ()  # branch: `else`
    mapping: dict[str, Ref | Any] = field(default_factory=dict)  # map/branch `output`
    over: Ref | None = None  # map's list; branch's condition value
    transform: Transform | None = None
    watch: GuardStep | None = None  # grounded generate: the output rails on its text

    @property
    def id(self) -> str:
        return self.step.id

    @property
    def own_spans(self) -> bool:
        """Steps that record their own spans (the grounded answer's context, prompt,
        generate and citations; a condense that has a history) instead of one span."""
        s = self.step
        return isinstance(s, CondenseStep | AgentStep) or (isinstance(s, GenerateStep)
                                                          and s.grounded is not None)


@dataclass(frozen=True)
class Plan:
    spec: ChainSpec
    nodes: tuple[Node, ...]
    outputs: dict[str, Ref | Any]
    output_types: dict[str, Typed]

    def models(self) -> list[str]:
        found: list[str] = []
        for node in _walk(self.nodes):
            m = getattr(node.step, "model", None)
            if m and m not in found:
                found.append(m)
        return found


def _walk(nodes: Sequence[Node]) -> list[Node]:
    out = []
    for n in nodes:
        out += [n, *_walk(n.body), *_walk(n.other)]
    return out


def walk(nodes: Sequence[Node]) -> list[Node]:
    """Every node, nested ones after their parent."""
    return _walk(nodes)


def compile_chain(spec: ChainSpec, transforms: Mapping[str, Transform] | None = None) -> Plan:
    """The plan of `spec`, or an InputError naming the step and field that is wrong."""
    c = _Compiler(spec, {**TRANSFORMS, **(transforms or {})})
    nodes = _watched(c.steps(spec.steps, {}, None, "steps"))
    visible = {n.id: n.outputs for n in nodes}
    outputs = {k: c.parse(v, visible, None, f"outputs.{k}") for k, v in spec.outputs.items()}
    types = {k: c.typed(v, visible, None) for k, v in outputs.items()}
    return Plan(spec, nodes, outputs, types)


def _watched(nodes: tuple[Node, ...]) -> tuple[Node, ...]:
    """Link each grounded generate step to the output guard on its text: the streamable
    rails among them watch the answer while it streams."""
    out = []
    for node in nodes:
        s = node.step
        if isinstance(s, GenerateStep) and s.grounded is not None:
            guard = next((n.step for n in nodes if isinstance(n.step, GuardStep)
                          and n.step.stage == "output" and isinstance(n.inputs.get("text"), Ref)
                          and n.inputs["text"].root == s.id), None)
            node = replace(node, watch=guard)
        out.append(node)
    return tuple(out)


class _Compiler:
    def __init__(self, spec: ChainSpec, transforms: Mapping[str, Transform]) -> None:
        self.inputs = {k: Typed(i.type) for k, i in spec.inputs.items()}
        self.transforms = transforms
        self.seen: set[str] = set()

    # -- references ----------------------------------------------------------------------
    def parse(self, v: Any, visible: Mapping[str, Mapping[str, Typed]], item: Typed | None,
              where: str) -> Ref | Any:
        if not (isinstance(v, str) and v.startswith("$")):
            if isinstance(v, (dict, list)) and _has_ref(v):
                raise InputError(f"{where}: references cannot sit inside a list or mapping",
                                 hint="map each value to its own input, or use a transform")
            return v
        parts = v[1:].split(".")
        root, path = parts[0], tuple(parts[1:])
        ref = Ref(v, root, path)
        self.typed(ref, visible, item, where)
        return ref

    def typed(self, v: Ref | Any, visible: Mapping[str, Mapping[str, Typed]],
              item: Typed | None, where: str = "") -> Typed:
        if not isinstance(v, Ref):
            return Typed(literal_type(v))
        if v.root == "index":
            if item is None or v.path:
                raise InputError(f"{where}: $index exists only inside a map, alone")
            return Typed("integer")
        if v.root == "item":
            if item is None:
                raise InputError(f"{where}: $item exists only inside a map's steps",
                                 hint="refer to $inputs.NAME or $STEP.FIELD here")
            return field_type(item, v.path, v.text, where)
        if v.root == "inputs":
            if not v.path or v.path[0] not in self.inputs:
                raise InputError(f"{where}: {v.text} names no declared input",
                                 hint="declared: " + ", ".join(self.inputs))
            return field_type(self.inputs[v.path[0]], v.path[1:], v.text, where)
        if v.root not in visible:
            raise InputError(f"{where}: {v.text} refers to no step {v.root!r} that runs "
                             "before it here",
                             hint="steps inside a map or branch are visible only to that "
                                  "map's or branch's own steps and output")
        outs = visible[v.root]
        if not v.path or v.path[0] not in outs:
            raise InputError(f"{where}: step {v.root!r} has no output "
                             f"{(v.path or ('(none)',))[0]!r}",
                             hint="it has: " + ", ".join(outs))
        return field_type(outs[v.path[0]], v.path[1:], v.text, where)

    # -- steps ---------------------------------------------------------------------------
    def steps(self, steps: Sequence[StepSpec], outer: Mapping[str, Mapping[str, Typed]],
              item: Typed | None, where: str) -> tuple[Node, ...]:
        for s in steps:
            if s.id in self.seen:
                raise InputError(f"{where}: step id {s.id!r} is used twice",
                                 hint="every step of a chain needs its own id")
            self.seen.add(s.id)
        visible = dict(outer)
        nodes = []
        for s in _ordered(steps, where):
            node = self.node(s, visible, item, f"step {s.id!r}")
            visible[s.id] = node.outputs
            nodes.append(node)
        return tuple(nodes)

    def node(self, s: StepSpec, visible: Mapping[str, Mapping[str, Typed]],
             item: Typed | None, where: str) -> Node:
        ins = {k: self.parse(v, visible, item, f"{where}, inputs.{k}")
               for k, v in getattr(s, "inputs", {}).items()}
        if isinstance(s, GenerateStep) and s.grounded is not None:
            self.want(ins, {"question": "string", "passages": "passages"}, visible, item,
                      where)
            return Node(s, ins, {"text": Typed("string"), "citations": Typed("list"),
                                 "abstained": Typed("boolean"), "sources": Typed("passages")})
        if isinstance(s, GenerateStep):
            outs = {"text": Typed("string")}
            if s.output is not None:
                outs["json"] = Typed("object", s.output.schema_)
            return Node(s, ins, outs)
        if isinstance(s, AgentStep):
            self.want(ins, {"question": "string"}, visible, item, where)
            return Node(s, ins, AGENT_OUTPUTS)
        if isinstance(s, RetrieveStep):
            self.want(ins, {"query": "string"}, visible, item, where)
            return Node(s, ins, {"passages": Typed("passages"), "count": Typed("integer")})
        if isinstance(s, RerankStep):
            self.want(ins, {"query": "string", "passages": "passages"}, visible, item, where)
            return Node(s, ins, {"passages": Typed("passages")})
        if isinstance(s, GuardStep | CondenseStep):
            return self._checked(s, ins, visible, item, where)
        if isinstance(s, TransformStep):
            fn = self.transforms.get(s.function)
            if fn is None:
                raise InputError(f"{where}: no transform named {s.function!r}",
                                 hint="registered: " + (", ".join(sorted(self.transforms))
                                                         or "none"))
            self.want(ins, fn.inputs, visible, item, where)
            return Node(s, ins, {k: Typed(t) for k, t in fn.outputs.items()}, transform=fn)
        if isinstance(s, MapStep):
            return self._map(s, visible, item, where)
        assert isinstance(s, BranchStep)
        return self._branch(s, visible, item, where)

    def _checked(self, s: GuardStep | CondenseStep, ins: dict[str, Any],
                  visible: Mapping[str, Mapping[str, Typed]], item: Typed | None,
                  where: str) -> Node:
        """Rails on passages (context) or a text, and condensing a follow-up."""
        if isinstance(s, CondenseStep):
            self.want(ins, {"question": "string"}, visible, item, where,
                      optional={"history"})
            return Node(s, ins, {"question": Typed("string"), "message": Typed("string")})
        if s.stage == "context":
            self.want(ins, {"passages": "passages"}, visible, item, where,
                      optional={"question"})
            return Node(s, ins, {"passages": Typed("passages"), "blocked": Typed("boolean"),
                                 "rail": Typed("string")})
        self.want(ins, {"text": "string"}, visible, item, where,
                  optional={"sources", "standalone"})
        outs = {"text": Typed("string"), "blocked": Typed("boolean"), "rail": Typed("string")}
        if "standalone" in ins:
            outs["standalone"] = Typed("string")
        return Node(s, ins, outs)

    def _map(self, s: MapStep, visible: Mapping[str, Mapping[str, Typed]],
             item: Typed | None, where: str) -> Node:
        over = self.parse(s.over, visible, item, f"{where}, over")
        kind = self.typed(over, visible, item, where)
        if not isinstance(over, Ref) or kind.type not in ("list", "passages", "any"):
            raise InputError(f"{where}, over: {s.over} is {article(kind.type)}, not a list",
                             hint="map over a list input or a step's passages")
        each = Typed("object", passage=True) if kind.type == "passages" else Typed("any")
        body = self.steps(s.steps, visible, each, f"{where}, steps")
        inner = {**visible, **{n.id: n.outputs for n in walk(body)}}
        mapping = {k: self.parse(v, inner, each, f"{where}, output.{k}")
                   for k, v in s.output.items()}
        return Node(s, {}, {"results": Typed("list")}, body, (), mapping, over)

    def _branch(self, s: BranchStep, visible: Mapping[str, Mapping[str, Typed]],
                item: Typed | None, where: str) -> Node:
        try:
            s.if_.operator()
        except ValueError as exc:
            raise InputError(f"{where}, if: {exc}", hint="e.g. if: {value: $x.json.label, "
                             "equals: negative}") from None
        cond = self.parse(s.if_.value, visible, item, f"{where}, if.value")
        if not isinstance(cond, Ref):
            raise InputError(f"{where}, if.value: give a reference such as $step.field")
        then = self.steps(s.then, visible, item, f"{where}, then")
        other = self.steps(s.else_, visible, item, f"{where}, else")
        arms = [{**visible, **{n.id: n.outputs for n in walk(arm)}} for arm in (then, other)]
        mapping, outs = {}, {"taken": Typed("string")}
        for k, v in s.output.items():
            # a reference into either arm is allowed (null when that arm did not run)
            inner = {**arms[0], **arms[1]}
            mapping[k] = self.parse(v, inner, item, f"{where}, output.{k}")
            outs[k] = self.typed(mapping[k], inner, item)
        return Node(s, {}, outs, then, other, mapping, cond)

    def want(self, ins: Mapping[str, Any], types: Mapping[str, ValueType],
             visible: Mapping[str, Mapping[str, Typed]], item: Typed | None, where: str,
             optional: set[str] | None = None) -> None:
        """Exactly the inputs a kind or transform takes, each of a compatible type."""
        optional = optional or set()
        missing = sorted(set(types) - set(ins))
        unknown = sorted(set(ins) - set(types) - optional)
        if missing or unknown:
            raise InputError(
                f"{where}: inputs " + "; ".join(
                    ([f"missing {', '.join(missing)}"] if missing else [])
                    + ([f"unknown {', '.join(unknown)}"] if unknown else [])),
                hint="it takes: " + ", ".join([*types, *sorted(optional)]))
        for name, want in types.items():
            got = self.typed(ins[name], visible, item)
            if not compatible(got.type, want):
                shown = ins[name].text if isinstance(ins[name], Ref) else repr(ins[name])
                raise InputError(f"{where}, inputs.{name}: {shown} is {article(got.type)}, but "
                                 f"{article(want)} is needed",
                                 hint="map an output of the right type, or convert it with a "
                                      "transform")


def _has_ref(v: Any) -> bool:
    if isinstance(v, str):
        return v.startswith("$")
    if isinstance(v, dict):
        return any(_has_ref(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_ref(x) for x in v)
    return False


def _roots(s: StepSpec) -> set[str]:
    """Every reference root a step (and anything nested in it) uses."""
    found: set[str] = set()
    values: list[Any] = list(getattr(s, "inputs", {}).values())
    if isinstance(s, MapStep):
        values += [s.over, *s.output.values()]
    if isinstance(s, BranchStep):
        values += [s.if_.value, *s.output.values()]
    for v in values:
        if isinstance(v, str) and v.startswith("$"):
            found.add(v[1:].split(".")[0])
    for sub in [*getattr(s, "steps", []), *getattr(s, "then", []), *getattr(s, "else_", [])]:
        found |= _roots(sub)
    return found


def _ordered(steps: Sequence[StepSpec], where: str) -> list[StepSpec]:
    """Steps in dependency order (stable: listed order among independent ones); a cycle is
    an error naming the steps in it."""
    ids = {s.id for s in steps}
    deps = {s.id: (_roots(s) & ids) - {s.id} for s in steps}
    for s in steps:
        if s.id in _roots(s):
            raise InputError(f"{where}: step {s.id!r} refers to its own output",
                             hint="a step can only use outputs of steps before it")
    done: list[StepSpec] = []
    left = list(steps)
    while left:
        ready = [s for s in left if deps[s.id] <= {d.id for d in done}]
        if not ready:
            raise InputError(f"{where}: the steps {', '.join(s.id for s in left)} form a "
                             "cycle (each waits for another's output)",
                             hint="break the cycle: a step can only use earlier results")
        done.append(ready[0])
        left.remove(ready[0])
    return done
