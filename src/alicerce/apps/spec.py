"""The app spec: what a user writes in YAML to bind collections, retrieval, a prompt, a model
and its decoding into one servable, versioned thing.

Parsing only checks shape and ranges (pydantic, unknown fields refused); whether the names
it mentions exist is checked when the registry resolves it against a home.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alicerce.chains.spec import ChainSpec, InputSpec, StepSpec, short_inputs
from alicerce.config import Extractiveness, SearchMode
from alicerce.errors import InputError
from alicerce.guard.config import normalise

Step = Literal["input_guards", "condense", "step_back", "retrieve", "rerank", "generate",
               "output_guards"]
STEPS: tuple[Step, ...] = ("input_guards", "condense", "step_back", "retrieve", "rerank",
                           "generate", "output_guards")
DEFAULT_CHAIN: tuple[Step, ...] = ("condense", "retrieve", "generate")
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UseCase(_Strict):
    """The business use case, in the seeds' terms: who uses it, how, within which limits."""

    actors: list[str] = Field(default_factory=list)
    main_flow: list[str] = Field(default_factory=list)
    constraints: list[str] = Field(default_factory=list)
    latency_budget_ms: int | None = Field(default=None, ge=1)
    non_functional: dict[str, str] = Field(default_factory=dict)


class Retrieval(_Strict):
    """Unset fields take the home's settings when the spec is resolved."""

    mode: SearchMode | None = None
    alpha: float | None = Field(default=None, ge=0.0, le=1.0)
    k: int | None = Field(default=None, ge=1, le=50)
    filters: dict[str, str | list[str]] = Field(default_factory=dict)
    reranker: Literal["none", "llm", "cross-encoder"] = "none"
    reranker_model: str | None = Field(
        default=None, description="llm: the model that judges each candidate [app's model]")
    reranker_path: str = Field(default="", description="cross-encoder: a local folder")
    candidates: int | None = Field(default=None, ge=1, le=100, description=(
        "Chunks retrieved for the reranker to reorder, before keeping k [3 x k, up to 50]."))
    context_tokens: int | None = Field(default=None, ge=64)
    select: Literal["windows", "passages"] | None = Field(default=None, description=(
        "What of the chunks the model reads: sentence windows or whole chunks [settings]"))
    context_min: int | None = Field(default=None, ge=0, description=(
        "Windows: past this many tokens, only windows within window_drop of the best "
        "[settings]"))
    window_drop: float | None = Field(default=None, ge=0.0, le=1.0, description=(
        "Windows: how far under the best sentence's similarity a window may score past "
        "context_min [settings]"))
    answerable_min: float | None = Field(default=None, ge=0.0, le=1.0, description=(
        "Abstain when the model's P(the sources answer) is below this; 0: no check "
        "[settings]"))
    answerable_head_min: float | None = Field(default=None, ge=0.0, le=1.0, description=(
        "Abstain, without asking the model, when the answerability head's P(the passages "
        "hold the answer) is below this; 0: no check [settings: the head's threshold]"))
    abstain_below: float | None = Field(default=None, ge=0.0, le=1.0)


class FusionSpec(_Strict):
    """How the answer uses the passages: all in one prompt, or RAG-Sequence / RAG-Token
    over the best `documents` (docs/chains.md#fusion)."""

    mode: Literal["prompt", "sequence", "token"] = "prompt"
    documents: int = Field(default=3, ge=1, le=8)


class Cache(_Strict):
    enabled: bool = True
    ttl_s: float | None = Field(default=None, gt=0)


class AppSpec(_Strict):
    name: str
    description: str = ""
    use_case: UseCase = UseCase()
    collections: list[str] = Field(default_factory=list)
    retrieval: Retrieval = Retrieval()
    prompt: str = "rag-answer:production"
    model: str | None = None
    adapter: str | None = Field(default=None, description=(
        "A LoRA adapter on the model that answers (NAME, NAME@N, NAME@LABEL; pinned at "
        "deploy)"))
    decoding: dict[str, Any] = Field(default_factory=dict)
    extractiveness: Extractiveness | None = None
    fusion: FusionSpec = FusionSpec()
    chain: list[Step] = Field(default_factory=lambda: list(DEFAULT_CHAIN))
    guards: dict[str, Any] = Field(
        default_factory=dict, description="Rails on input, retrieved context and output "
        "(docs/guardrails.md).")
    cache: Cache = Cache()
    # A chain app (docs/chains.md): declared inputs and outputs, and its steps.
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(default_factory=list, max_length=100)

    @field_validator("inputs", mode="before")
    @classmethod
    def _short_inputs(cls, v: Any) -> Any:
        return short_inputs(v)

    def flow(self) -> ChainSpec | None:
        """The chain of a chain app; None for a RAG app."""
        if not self.steps:
            return None
        return ChainSpec(inputs=self.inputs, outputs=self.outputs, steps=self.steps)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("use lower-case letters, digits, '.', '_' or '-' (up to 64)")
        return v

    @field_validator("chain")
    @classmethod
    def _chain(cls, v: list[Step]) -> list[Step]:
        if len(set(v)) != len(v):
            raise ValueError("a step appears twice")
        if "retrieve" not in v or "generate" not in v:
            raise ValueError("a chain needs at least the retrieve and generate steps")
        order = [STEPS.index(s) for s in v]
        if order != sorted(order):
            raise ValueError("steps must run in the order " + " → ".join(STEPS))
        return v

    @field_validator("guards")
    @classmethod
    def _guards(cls, v: dict[str, Any]) -> dict[str, Any]:
        return normalise(v) if v else {}

    @model_validator(mode="after")
    def _kind(self) -> AppSpec:
        """A chain app (steps) or a RAG app (collections), never a mix of the two."""
        if self.steps:
            rag = sorted(self.model_fields_set & {"collections", "retrieval", "prompt",
                                                  "model", "adapter", "decoding",
                                                  "extractiveness",
                                                  "chain", "guards", "fusion"})
            if rag:
                raise ValueError(f"a chain app (steps) does not take {', '.join(rag)}: "
                                 "put them in its steps (docs/chains.md)")
            if not self.inputs or not self.outputs:
                raise ValueError("a chain app needs inputs and outputs")
        elif self.inputs or self.outputs:
            raise ValueError("inputs and outputs belong to a chain app: add its steps")
        elif not self.collections:
            raise ValueError("collections: a RAG app needs at least one collection; "
                             "or give steps for a chain app (docs/chains.md)")
        return self

    @model_validator(mode="after")
    def _guard_steps(self) -> AppSpec:
        """The chain names the guard steps exactly when the guards section has rails for
        them, so a stored chain always says what runs."""
        wanted = {"input_guards": bool(self.guards.get("input") or self.guards.get("context")),
                  "output_guards": bool(self.guards.get("output")),
                  "rerank": self.retrieval.reranker != "none"}
        for step, on in wanted.items():
            if step in self.chain and not on and step == "rerank":
                raise ValueError("chain: rerank has nothing to run; set retrieval.reranker "
                                 "(llm or cross-encoder), or drop the step")
            if step in self.chain and not on:
                raise ValueError(f"chain: {step} has no rails; add them under guards "
                                 "(docs/guardrails.md) or drop the step")
        steps = [s for s in STEPS if s in self.chain or wanted.get(s, False)]
        object.__setattr__(self, "chain", steps)
        return self


def parse(text: str, source: str = "app spec") -> AppSpec:
    """An AppSpec from YAML text; every problem is named with its field path."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"{source} is not valid YAML: {exc}",
                         hint="check the indentation and quoting near the line named") from None
    if not isinstance(data, dict):
        raise InputError(f"{source} must be a YAML mapping (name: ..., collections: [...])",
                         hint="see docs/apps.md for a complete example")
    try:
        return AppSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {_message(e)}"
            for e in exc.errors())
        raise InputError(f"{source} is invalid: {problems}",
                         hint="fix those fields; docs/apps.md lists every field") from None


def read(path: Path) -> str:
    """A spec file's text (kept as written beside the resolved spec)."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}",
                         hint="give the path of a UTF-8 YAML file") from None


def _message(err: Any) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown field"
    return str(err["msg"]).removeprefix("Value error, ")
