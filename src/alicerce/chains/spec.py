"""The chain section of an app spec: declared inputs and outputs, and typed steps.

    inputs:  {text: string}                      # or {text: {type: string, description: ...}}
    outputs: {summary: $summarise.text, label: $classify.json.label}
    steps:
      - id: summarise
        kind: generate
        model: qwen2.5-1.5b-instruct
        prompt: summarise-text@production       # name, name@version or name@label
        inputs: {text: $inputs.text}            # every prompt variable, mapped
      - id: classify
        kind: generate
        model: qwen2.5-0.5b-instruct
        prompt: classify-sentiment
        inputs: {text: $summarise.text}
        output: {schema: {type: object, ...}}   # JSON, validated, retried on failure

A value in `inputs`/`output` is a reference (`$inputs.NAME`, `$STEP.FIELD[.KEY...]`, inside
a map `$item[.KEY]` and `$index`) or a literal. Steps may be listed in any order: the order
they run in comes from their references (a DAG, checked at deploy). Code never lives in the
YAML: a `transform` names a Python function registered as a plugin.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from alicerce.config import Extractiveness, SearchMode

Fusion = Literal["prompt", "sequence", "token"]
ValueType = Literal["string", "number", "integer", "boolean", "object", "list", "passages",
                    "any"]
STEP_ID = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
RESERVED = {"inputs", "item", "index"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class InputSpec(_Strict):
    type: ValueType = "string"
    description: str = ""
    required: bool = True
    default: Any = None


class _Step(_Strict):
    id: str

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not STEP_ID.match(v) or v in RESERVED:
            raise ValueError("a step id is lower-case letters, digits and '_' (up to 40), "
                             "starting with a letter, and not inputs/item/index")
        return v


class JsonOutput(_Strict):
    schema_: dict[str, Any] = Field(alias="schema")
    retries: int = Field(2, ge=0, le=5)


class Grounding(_Strict):
    """A generate step that answers from `passages` (RAG): the best that fit
    `context_tokens` go into the prompt as numbered sources, the step abstains without the
    model when the best dense match is under `abstain_below`, and `[n]` markers are checked
    against the sources shown. When the output guard on its text has the canary rail, the
    process's canary is appended to the system prompt."""

    context_tokens: int = Field(1500, ge=64)
    # passages: whole chunks, best first; windows: the sentences closest to the question
    # with their neighbours (chains/select.py)
    select: Literal["passages", "windows"] = "passages"
    # windows: past `context_min` tokens, only windows within `window_drop` of the best
    # sentence's score go in (None: the whole budget is filled)
    context_min: int | None = Field(None, ge=0)
    window_drop: float = Field(0.02, ge=0.0, le=1.0)
    # abstain when P(the sources answer the question) is below this (chains/answerable.py)
    answerable_min: float = Field(0.0, ge=0.0, le=1.0)
    # abstain, without the model, when the answerability head's P(the passages hold the
    # answer) is below this (chains/answerability.py)
    answerable_head_min: float = Field(0.0, ge=0.0, le=1.0)
    abstain_below: float = Field(0.0, ge=0.0, le=1.0)
    extractiveness: Extractiveness = "balanced"
    # prompt: every passage in one prompt; sequence / token: RAG-Sequence / RAG-Token over
    # the best `documents` passages, one prompt each (chains/fusion.py)
    fusion: Fusion = "prompt"
    documents: int = Field(3, ge=1, le=8)


class GenerateStep(_Step):
    """A prompt from the registry, rendered with `inputs`, run on `model`; with
    `grounded`, an answer from passages with citations (inputs: question, passages)."""

    kind: Literal["generate"]
    prompt: str
    model: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    decoding: dict[str, Any] = Field(default_factory=dict)
    output: JsonOutput | None = None
    grounded: Grounding | None = None
    # a LoRA adapter on `model` (NAME, NAME@N or NAME@LABEL), pinned to NAME@N at deploy
    adapter: str | None = None
    # filled when the spec is resolved against a home
    model_identity: str = ""
    adapter_identity: str = ""


class RetrieveStep(_Step):
    """Hybrid (or one-mode) search over `collections`, the lists interleaved. With
    `step_back` (a prompt), the model first asks a more general question and its chunks
    are interleaved with the query's."""

    kind: Literal["retrieve"]
    collections: list[str] = Field(min_length=1)
    inputs: dict[str, Any]
    mode: SearchMode | None = None
    k: int | None = Field(None, ge=1, le=100)
    alpha: float | None = Field(None, ge=0.0, le=1.0)
    filters: dict[str, str | list[str]] = Field(default_factory=dict)
    step_back: str = ""
    model: str | None = None  # step_back's model


class CondenseStep(_Step):
    """A follow-up made standalone from the conversation's `history` (the newest turns
    that fit `chat_history_tokens`), screened first by `rails` (input rails: a redacted
    history is what the model sees). Without history the question passes unchanged."""

    kind: Literal["condense"]
    prompt: str = "condense-question"
    model: str | None = None
    inputs: dict[str, Any]
    rails: list[Any] = Field(default_factory=list)


class RerankStep(_Step):
    """Reorder passages: `fusion` keeps retrieval's fused order, `llm` asks a model
    whether each passage answers the query, `cross-encoder` scores pairs with local
    sentence-transformers CrossEncoder weights."""

    kind: Literal["rerank"]
    reranker: Literal["fusion", "llm", "cross-encoder"] = "fusion"
    inputs: dict[str, Any]
    k: int = Field(5, ge=1, le=50)
    model: str | None = None
    prompt: str = "rerank-relevance"
    path: str = ""
    model_identity: str = ""


class GuardStep(_Step):
    """Rails on a text, as in an app's `guards:` section; a block stops the chain
    (`on_block: stop`) or is reported in the outputs (`continue`). Stage `context` screens
    `passages` instead: blocked ones are dropped, redacted ones go on redacted."""

    kind: Literal["guard"]
    stage: Literal["input", "context", "output"] = "input"
    rails: list[Any] = Field(min_length=1)
    inputs: dict[str, Any]
    on_block: Literal["stop", "continue"] = "stop"


class TransformStep(_Step):
    kind: Literal["transform"]
    function: str
    inputs: dict[str, Any] = Field(default_factory=dict)


class MapStep(_Step):
    """Run `steps` once per item of the list `over` (`$item`, `$index` inside); the
    outputs are `results`, one `output` mapping per item."""

    kind: Literal["map"]
    over: str
    steps: list[StepSpec] = Field(min_length=1)
    output: dict[str, Any] = Field(min_length=1)
    max_items: int = Field(50, ge=1, le=1000)


class Condition(_Strict):
    """One test on a value; exactly one operator."""

    value: str
    equals: Any = None
    not_equals: Any = None
    in_: list[Any] | None = Field(None, alias="in")
    contains: str | None = None
    gt: float | None = None
    lt: float | None = None
    exists: bool | None = None

    def operator(self) -> tuple[str, Any]:
        set_ = [(k, v) for k, v in (("equals", self.equals), ("not_equals", self.not_equals),
                                    ("in", self.in_), ("contains", self.contains),
                                    ("gt", self.gt), ("lt", self.lt), ("exists", self.exists))
                if v is not None]
        if len(set_) != 1:
            raise ValueError("a condition has exactly one of equals, not_equals, in, "
                             "contains, gt, lt, exists")
        return set_[0]


class BranchStep(_Step):
    """`then` when the condition holds, else `else`; `output` maps the arm's results
    (a reference into the arm not taken is null)."""

    kind: Literal["branch"]
    if_: Condition = Field(alias="if")
    then: list[StepSpec] = Field(default_factory=list)
    else_: list[StepSpec] = Field(default_factory=list, alias="else")
    output: dict[str, Any] = Field(default_factory=dict)


class ToolSpec(_Strict):
    """One tool of an agent: a built-in or plugin (`tool`), the name the model calls it by
    (two searches over different collections need two names), and its options."""

    tool: str
    name: str = ""
    description: str = ""
    options: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float | None = Field(None, gt=0, le=600)


class ExampleStep(_Strict):
    thought: str
    tool: str
    args: dict[str, Any] = Field(default_factory=dict)
    observation: str = ""


class Trajectory(_Strict):
    """A worked example shown to the model: a question, the calls made, the answer."""

    question: str
    steps: list[ExampleStep] = Field(default_factory=list, max_length=10)
    answer: str


class AgentStep(_Step):
    """ReAct: the model thinks, calls one of `tools` (its action constrained by a JSON
    schema to a declared tool with typed arguments, or `final_answer`), reads the
    observation, and goes on until it answers or a limit ends it (docs/agents.md)."""

    kind: Literal["agent"]
    prompt: str = "agent-react"
    decide_prompt: str = "agent-decide"
    model: str | None = None
    inputs: dict[str, Any]
    tools: list[ToolSpec] = Field(min_length=1, max_length=20)
    examples: list[Trajectory] = Field(default_factory=list, max_length=5)
    decide: bool = True  # first ask whether any tool is needed at all
    # the action's JSON schema enforced while decoding; off, actions are only checked after
    # (backends that cannot constrain, and the action-validity benchmark)
    constrained: bool = True
    max_steps: int = Field(6, ge=1, le=20)
    tool_timeout_s: float = Field(15.0, gt=0, le=600)
    budget_s: float = Field(300.0, gt=0, le=3600)
    rails: list[Any] = Field(default_factory=list)  # context rails on every observation
    decoding: dict[str, Any] = Field(default_factory=dict)
    model_identity: str = ""

    @field_validator("tools", mode="before")
    @classmethod
    def _short_tools(cls, v: Any) -> Any:
        """`- calculator` and `- search: {collection: handbook}` are short forms."""
        if not isinstance(v, list):
            return v
        out = []
        for t in v:
            if isinstance(t, str):
                t = {"tool": t}
            elif isinstance(t, dict) and len(t) == 1 and "tool" not in t:
                (kind, options), = t.items()
                t = {"tool": kind, "options": options or {}}
            out.append(t)
        return out


StepSpec = Annotated[GenerateStep | RetrieveStep | RerankStep | GuardStep | TransformStep
                     | MapStep | BranchStep | CondenseStep | AgentStep,
                     Field(discriminator="kind")]
MapStep.model_rebuild()
BranchStep.model_rebuild()


class ChainSpec(_Strict):
    inputs: dict[str, InputSpec] = Field(min_length=1)
    outputs: dict[str, Any] = Field(min_length=1)
    steps: list[StepSpec] = Field(min_length=1, max_length=100)

    @field_validator("inputs", mode="before")
    @classmethod
    def _short_inputs(cls, v: Any) -> Any:
        return short_inputs(v)


def short_inputs(v: Any) -> Any:
    """`text: string` is short for `text: {type: string}`."""
    if isinstance(v, dict):
        return {k: {"type": t} if isinstance(t, str) else t for k, t in v.items()}
    return v
