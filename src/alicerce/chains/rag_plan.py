"""A RAG app as a chain: its short `chain:` list and settings written out as the steps the
runner runs, so a grounded answer goes through the same plan and runner as any chain.

    condense        the follow-up made standalone (history screened by the input rails)
    input_guards    input rails on the message and its standalone form
    retrieve        the app's collections (with step_back: the general question's too)
    rerank          llm or cross-encoder over the candidates (when the app sets one)
    context_guards  context rails on each passage
    generate        grounded: sources fitted to the budget, abstention, citations
    output_guards   output rails on the answer (the streamable ones watch it stream)

A request's options (another model, k, prompt, the rails off...) give another config and
so another plan; the app version's own plan is compiled once and shared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from alicerce.chains.answerability import head_min
from alicerce.chains.spec import ChainSpec
from alicerce.config import Settings

_REF = "$inputs.question"


@dataclass(frozen=True)
class RagConfig:
    """What a RAG app answers with: its resolved spec (or the settings, for a bare
    collection) with a request's options applied."""

    collections: tuple[str, ...]
    retrieval: Mapping[str, Any]
    prompt: str
    model: str
    decoding: Mapping[str, Any]
    extractiveness: str
    steps: tuple[str, ...]
    guards: Mapping[str, Any] = field(default_factory=dict)
    fusion: Mapping[str, Any] = field(default_factory=dict)  # {mode, documents}
    adapter: str | None = None  # the answering step's LoRA adapter, NAME@N

    @classmethod
    def of(cls, spec: Mapping[str, Any] | None, collection: str,
           settings: Settings) -> RagConfig:
        """The config of a resolved app spec, or of a bare collection (`spec` None)."""
        if spec is not None:
            return cls(tuple(c["name"] for c in spec["collections"]), spec["retrieval"],
                       spec["prompt"], spec["model"]["name"], spec["decoding"],
                       spec["extractiveness"], tuple(spec["chain"]), spec.get("guards", {}),
                       spec.get("fusion", {}), spec["model"].get("adapter"))
        return cls((collection,), {
            "mode": settings.search_mode, "alpha": settings.alpha, "k": settings.answer_k,
            "filters": {}, "reranker": "none", "context_tokens":
                settings.answer_context_tokens, "select": settings.answer_select,
            "context_min": settings.answer_context_min,
            "window_drop": settings.answer_window_drop,
            "answerable_min": settings.answerable_min,
            "answerable_head_min": head_min(settings),
            "abstain_below": settings.abstain_below},
            "rag-answer", settings.generator,
            {"max_tokens": settings.max_tokens, "temperature": settings.temperature},
            settings.extractiveness, ("condense", "retrieve", "generate"), settings.guards)

    def with_options(self, *, model: str | None = None, adapter: str | None = None,
                     decoding: Mapping[str, Any] | None = None, k: int | None = None,
                     mode: str | None = None, filters: Mapping[str, Any] | None = None,
                     step_back: bool | None = None, extractiveness: str | None = None,
                     prompt: str | None = None, guards: bool = True,
                     fusion: Mapping[str, Any] | None = None,
                     extra_collections: Sequence[str] = ()) -> RagConfig:
        """This config with a request's options over it (the app's filters win)."""
        r = dict(self.retrieval)
        if k is not None:
            r["k"] = k
            if r.get("reranker", "none") != "none":
                r["candidates"] = max(r.get("candidates", 0), min(100, 3 * k))
        if mode is not None:
            r["mode"] = mode
        if filters:
            r["filters"] = {**filters, **r.get("filters", {})}
        steps = self.steps
        if step_back is not None:
            steps = tuple(s for s in steps if s != "step_back") + (("step_back",)
                                                                    if step_back else ())
        return replace(self, collections=(*self.collections, *extra_collections),
                       retrieval=r, prompt=prompt or self.prompt, model=model or self.model,
                       adapter=adapter or (self.adapter if model in (None, self.model)
                                           else None),
                       decoding=decoding if decoding is not None else self.decoding,
                       extractiveness=extractiveness or self.extractiveness, steps=steps,
                       guards=self.guards if guards else {},
                       fusion=fusion if fusion is not None else self.fusion)


def rag_chain(c: RagConfig) -> ChainSpec:
    """The chain a RAG config runs (see the module's docstring)."""
    r, g = c.retrieval, c.guards
    steps: list[dict[str, Any]] = []
    message = standalone = _REF
    if "condense" in c.steps:
        steps.append({"id": "condense", "kind": "condense", "model": c.model,
                      "rails": g.get("input", []),
                      "inputs": {"question": _REF, "history": "$inputs.history"}})
        message, standalone = "$condense.message", "$condense.question"
    if g.get("input"):
        steps.append({"id": "input_guards", "kind": "guard", "stage": "input",
                      "rails": g["input"], "inputs": {"text": message,
                                                      "standalone": standalone}})
        standalone = "$input_guards.standalone"
    reranked = r.get("reranker", "none") != "none"
    steps.append({"id": "retrieve", "kind": "retrieve", "collections": list(c.collections),
                  "mode": r.get("mode"), "alpha": r.get("alpha"),
                  "k": r["candidates"] if reranked else r.get("k"),
                  "filters": dict(r.get("filters", {})),
                  "step_back": "step-back" if "step_back" in c.steps else "",
                  **({"model": c.model} if "step_back" in c.steps else {}),
                  "inputs": {"query": standalone}})
    passages = "$retrieve.passages"
    if reranked:
        kind = r["reranker"]
        steps.append({"id": "rerank", "kind": "rerank", "k": r.get("k") or 5,
                      "reranker": kind, "inputs": {"query": standalone,
                                                   "passages": passages},
                      **({"model": r["reranker_model"], "prompt": r["reranker_prompt"]}
                         if kind == "llm" else {"path": r["reranker_path"]})})
        passages = "$rerank.passages"
    if g.get("context"):
        steps.append({"id": "context_guards", "kind": "guard", "stage": "context",
                      "rails": g["context"],
                      "inputs": {"passages": passages, "question": standalone}})
        passages = "$context_guards.passages"
    output = g.get("output", [])
    steps.append({"id": "generate", "kind": "generate", "prompt": c.prompt, "model": c.model,
                  "decoding": dict(c.decoding),
                  # a request naming its own model answers without the app's adapter
                  **({"adapter": c.adapter} if c.adapter else {}),
                  "grounded": {"context_tokens": r["context_tokens"],
                               # versions deployed before windows existed read passages
                               "select": r.get("select", "passages"),
                               # ... and those before the adaptive budget fill it
                               "context_min": r.get("context_min"),
                               "window_drop": r.get("window_drop", 0.02),
                               "answerable_min": r.get("answerable_min", 0.0),
                               # versions deployed before the head do not use it
                               "answerable_head_min": r.get("answerable_head_min", 0.0),
                               "abstain_below": r["abstain_below"],
                               "extractiveness": c.extractiveness,
                               **({"fusion": c.fusion["mode"],
                                   "documents": c.fusion["documents"]} if c.fusion else {})},
                  "inputs": {"question": standalone, "passages": passages}})
    answer = "$generate.text"
    if output:
        steps.append({"id": "output_guards", "kind": "guard", "stage": "output",
                      "rails": output, "inputs": {"text": answer,
                                                  "sources": "$generate.sources"}})
        answer = "$output_guards.text"
    return ChainSpec.model_validate({
        "inputs": {"question": "string",
                   "history": {"type": "list", "required": False, "default": []}},
        "outputs": {"answer": answer, "citations": "$generate.citations",
                    "abstained": "$generate.abstained"},
        "steps": steps})
