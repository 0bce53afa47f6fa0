"""The runner: one compiled plan, one set of inputs, every step in order, one span each.

Models are the host's (loaded once per process and shared by every step and request);
the runner keeps only what it builds from a plan (rails, rerankers), keyed by the step.
A step that fails raises an error naming the step; the spans recorded so far stay with
the request's Recorder, so the trace of a failed run shows how far it got.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from alicerce.chains.agent import AgentSteps
from alicerce.chains.citations import interleave
from alicerce.chains.grounded import GroundedSteps, hit_of, passage
from alicerce.chains.plan import Node, Plan, Scope, value
from alicerce.chains.spec import (
    AgentStep,
    BranchStep,
    CondenseStep,
    GenerateStep,
    GuardStep,
    MapStep,
    RerankStep,
    RetrieveStep,
    TransformStep,
)
from alicerce.chains.state import RunState, Stop, Turn
from alicerce.chains.values import check_inputs, holds, parse_json
from alicerce.config import SearchMode, Settings
from alicerce.embed.base import Embedder
from alicerce.errors import AlicerceError, ChainError, GeneratorError, InputError
from alicerce.generate.base import Generator as Model
from alicerce.generate.params import DecodingParams
from alicerce.guard.config import build as build_guards
from alicerce.guard.rails import Rails
from alicerce.observe.spans import Recorder
from alicerce.prompts.registry import PromptRegistry
from alicerce.retrieve.rerankers import CrossEncoderReranker, LlmReranker
from alicerce.store.base import Filters
from alicerce.tools.base import Tool
from alicerce.tools.registry import plugins
from alicerce.types import Hit, Message, Usage

_SPAN_CHARS = 4000  # longer texts are cut in spans: a trace must stay small


class Host(Protocol):
    """What the runner needs from the platform."""

    settings: Settings
    canary: str

    def generator(self, model: str | None = None, adapter: str | None = None) -> Model: ...

    @property
    def prompts(self) -> PromptRegistry: ...

    def search(self, query: str, collection: str, *, mode: SearchMode | None = None,
               k: int | None = None, alpha: float | None = None,
               filters: Filters | None = None, spans: Recorder | None = None) -> list[Hit]: ...

    def app_plan(self, app: str) -> tuple[str, Plan]: ...

    def sentence_embedder(self) -> Embedder: ...


@dataclass(frozen=True)
class ChainResult:
    outputs: dict[str, Any]
    blocked: str  # "step:rail" when a guard stopped the chain, else ""
    usage: Usage
    latency_ms: float
    trace_id: str = ""
    json_tries: tuple[int, ...] = ()
    stop: Stop | None = None
    verdicts: tuple[dict[str, Any], ...] = ()
    redactions: dict[str, str] | None = None
    agents: tuple[dict[str, Any], ...] = ()  # per agent step: status, steps, tool errors


class ChainRunner:
    def __init__(self, host: Host) -> None:
        self.host = host
        self._rails: dict[str, Rails] = {}
        self._cross: dict[str, CrossEncoderReranker] = {}
        self._params: dict[tuple[str, str], DecodingParams] = {}
        self.grounded = GroundedSteps(host, self.rails)
        self.tools: dict[str, Tool] = plugins()  # and Alicerce.use_tool's
        self.agent = AgentSteps(host, self.rails, self.run, lambda: self.tools)

    def rails(self, stage: str, rails: Sequence[Any]) -> Rails:
        """Built rails for one stage, shared by every step and app that lists the same
        ones (their models load on first use)."""
        key = json.dumps([stage, list(rails)], sort_keys=True, default=str)
        if key not in self._rails:
            self._rails[key] = getattr(build_guards({stage: list(rails)},
                                                    self.host.settings), stage)
        return self._rails[key]

    def cross_encoder(self, path: str) -> CrossEncoderReranker:
        """One loaded cross-encoder per folder, shared by chains and RAG apps."""
        return self._cross.setdefault(path, CrossEncoderReranker(path))

    def run(self, plan: Plan, inputs: Mapping[str, Any], rec: Recorder,
            key: str = "", depth: int = 0) -> ChainResult:
        """Outputs of `plan` for `inputs` (checked first); `key` names the plan for caches;
        `depth` counts apps run by an agent's ask_app tool."""
        for item in self.stream(plan, inputs, rec, key, depth=depth):
            if isinstance(item, ChainResult):
                return item
        raise AssertionError("a run ends with its result")

    def stream(self, plan: Plan, inputs: Mapping[str, Any], rec: Recorder, key: str = "",
               turn: Turn | None = None, depth: int = 0) -> Iterator[str | ChainResult]:
        """The text of a grounded generate step as it comes, then the ChainResult. A
        question's `turn` (RAG) carries what its answer needs; its history is bounded by
        the condense step, not by max_chain_input_chars."""
        limit = self.host.settings.max_chain_input_chars
        given = check_inputs(plan.spec, inputs, None if turn else limit)
        scope, state = Scope(given), RunState(turn=turn, depth=depth)
        yield from self._nodes(plan.nodes, scope, state, rec, key, "")
        outputs = {} if state.stop else {k: value(v, scope) for k, v in plan.outputs.items()}
        stop = state.stop
        yield ChainResult(outputs, f"{stop.step}:{stop.rail}" if stop else "", state.usage,
                          rec.elapsed_ms(), json_tries=tuple(state.json_tries), stop=stop,
                          verdicts=tuple(state.verdicts), redactions=dict(state.redactions),
                          agents=tuple(state.agents))

    def passages(self, plan: Plan, query: str, rec: Recorder) -> list[Hit]:
        """What a plan's retrieve and rerank steps find for `query`, without the model's
        step-back question (retrieval evaluation scores this)."""
        scope, state = Scope({}), RunState()
        found: list[dict[str, Any]] = []
        for node in plan.nodes:
            s = node.step
            if isinstance(s, RetrieveStep):
                plain = s.model_copy(update={"step_back": ""})
                found = self._retrieve(plain, query, scope, state, rec)["passages"]
            elif isinstance(s, RerankStep):
                found = self._rerank(s, query, found, scope, {})["passages"]
        return [hit_of(p, scope.hits) for p in found]

    def _nodes(self, nodes: Sequence[Node], scope: Scope, state: RunState, rec: Recorder,
               key: str, prefix: str) -> Generator[str, None, None]:
        for node in nodes:
            if state.stop:
                return
            scope.steps[node.id] = yield from self._node(node, scope, state, rec, key, prefix)

    def _node(self, node: Node, scope: Scope, state: RunState, rec: Recorder, key: str,
              prefix: str) -> Generator[str, None, dict[str, Any]]:
        s = node.step
        ins = {k: value(v, scope) for k, v in node.inputs.items()}
        try:
            if node.own_spans:
                return (yield from self._kind(node, ins, scope, state, rec, key, prefix, {}))
            guard = isinstance(s, GuardStep)  # rails' spans keep verdicts, not raw texts
            with rec.span(f"{prefix}{s.id}", kind=s.kind,
                          **({} if guard else {"inputs": _shown(ins)})) as span:
                out = yield from self._kind(node, ins, scope, state, rec, key, prefix, span)
                if not guard:
                    span["outputs"] = _shown(out)
            return out
        except AlicerceError as exc:
            if exc.message.startswith(f"step {s.id!r}"):
                raise
            raise type(exc)(f"step {s.id!r} ({s.kind}) failed: {exc.message}",
                            hint=exc.hint) from None
        except Exception as exc:  # a plugin transform's own bug
            raise ChainError(f"step {s.id!r} ({s.kind}) failed: "
                             f"{type(exc).__name__}: {exc}",
                             hint="see the trace for the step's inputs") from None

    def _kind(self, node: Node, ins: dict[str, Any], scope: Scope, state: RunState,
              rec: Recorder, key: str, prefix: str,
              span: dict[str, Any]) -> Generator[str, None, dict[str, Any]]:
        s = node.step
        if isinstance(s, GenerateStep) and s.grounded is not None:
            return (yield from self.grounded.answer(node, ins, self._decoding(s, key),
                                                    scope.hits, state, rec))
        if isinstance(s, GenerateStep):
            return self._generate(s, ins, state, span, key)
        if isinstance(s, AgentStep):
            return self.agent.run(node, ins, state, rec, key, prefix)
        if isinstance(s, RetrieveStep):
            return self._retrieve(s, ins["query"], scope, state, rec)
        if isinstance(s, RerankStep):
            return self._rerank(s, ins["query"], ins["passages"], scope, span)
        if isinstance(s, GuardStep):
            return self.grounded.guard(s, ins, state, rec, span)
        if isinstance(s, CondenseStep):
            return self.grounded.condense(s, ins, state, rec)
        if isinstance(s, TransformStep):
            assert node.transform is not None
            result = node.transform.fn(**ins)
            missing = [k for k in node.outputs if k not in result]
            if missing:
                raise ChainError(f"transform {s.function!r} returned no "
                                 f"{', '.join(missing)}", hint="fix the plugin")
            return {k: result[k] for k in node.outputs}
        if isinstance(s, MapStep):
            return (yield from self._map(node, scope, state, rec, key, prefix))
        assert isinstance(s, BranchStep) and node.over is not None
        taken = holds(s.if_, node.over.get(scope))
        child = scope.child()
        span["taken"] = "then" if taken else "else"
        yield from self._nodes(node.body if taken else node.other, child, state, rec, key,
                               f"{prefix}{s.id}.")
        return {"taken": span["taken"], **{k: value(v, child) for k, v in node.mapping.items()}}

    def _map(self, node: Node, scope: Scope, state: RunState, rec: Recorder, key: str,
             prefix: str) -> Generator[str, None, dict[str, Any]]:
        s = node.step
        assert isinstance(s, MapStep) and node.over is not None
        items = node.over.get(scope)
        if not isinstance(items, list):
            raise InputError(f"over: {s.over} is not a list here ({type(items).__name__})",
                             hint="map over a list")
        if len(items) > s.max_items:
            raise InputError(f"{len(items)} items to map, over max_items {s.max_items}",
                             hint="raise max_items in the step, or send fewer items")
        results = []
        for i, item in enumerate(items):
            child = scope.child(item, i)
            yield from self._nodes(node.body, child, state, rec, key, f"{prefix}{s.id}[{i}].")
            results.append({k: value(v, child) for k, v in node.mapping.items()})
        return {"results": results}

    # -- kinds ---------------------------------------------------------------------------
    def _generate(self, s: GenerateStep, ins: dict[str, Any], state: RunState,
                  span: dict[str, Any], key: str) -> dict[str, Any]:
        template = self.host.prompts.get(s.prompt)
        messages = template.render(**ins)
        params = self._decoding(s, key)
        gen = self.host.generator(s.model, s.adapter)
        span.update(model=gen.name, backend=gen.backend, prompt=s.prompt,
                    messages=[{"role": m.role, "content": m.content} for m in messages])
        tries = 1 + (s.output.retries if s.output else 0)
        problem = ""
        for attempt in range(1, tries + 1):
            done = gen.complete(messages, params)
            state.add(done.usage)
            span["prompt_tokens"] = span.get("prompt_tokens", 0) + done.usage.prompt_tokens
            span["completion_tokens"] = (span.get("completion_tokens", 0)
                                         + done.usage.completion_tokens)
            span["attempts"] = attempt
            text = done.text.strip()
            if s.output is None:
                return {"text": text}
            parsed, problem = parse_json(text, s.output.schema_)
            if not problem:
                state.json_tries.append(attempt)
                return {"text": text, "json": parsed}
            span.setdefault("invalid", []).append(_cut(f"{problem}: {text}"))
            messages = [*messages, Message("assistant", text), Message(
                "user", f"That reply is not valid: {problem}. Reply again with JSON only, "
                        "following the schema.")]
        raise GeneratorError(f"the model's reply did not match the JSON schema after {tries} "
                             f"tries: {problem}",
                             hint="raise output.retries, simplify the schema, or use a larger "
                                  "model for this step")

    def _decoding(self, s: GenerateStep, key: str) -> DecodingParams:
        """A step's decoding, built once per plan (validating a JSON schema takes a while);
        an unnamed plan (a request's own options) builds it each time."""
        if not key:
            return DecodingParams.build(**s.decoding)
        if (key, s.id) not in self._params:
            self._params[(key, s.id)] = DecodingParams.build(**s.decoding)
        return self._params[(key, s.id)]

    def _retrieve(self, s: RetrieveStep, query: str, scope: Scope, state: RunState,
                  rec: Recorder) -> dict[str, Any]:
        if not query.strip():
            raise InputError("the query is empty", hint="map a non-empty text to query")
        hits = self._search(s, query, rec)
        if s.step_back:
            t0 = rec.elapsed_ms()
            with rec.span("step_back", question=query) as out:
                general, usage = self._general(s, query)
                out.update(output=general, prompt_tokens=usage.prompt_tokens,
                           completion_tokens=usage.completion_tokens)
            state.add(usage)
            hits = interleave([hits, self._search(s, general, rec)])
            if state.turn is not None:
                state.turn.timings["step_back_ms"] = rec.elapsed_ms() - t0
        scope.hits.update({h.chunk_id: h for h in hits})
        passages = [passage(i, h) for i, h in enumerate(hits, 1)]
        return {"passages": passages, "count": len(passages)}

    def _search(self, s: RetrieveStep, query: str, rec: Recorder) -> list[Hit]:
        ranked = [self.host.search(query, c, mode=s.mode, k=s.k, alpha=s.alpha,
                                   filters=dict(s.filters) or None, spans=rec)
                  for c in s.collections]
        return interleave(ranked)[: s.k]

    def _general(self, s: RetrieveStep, query: str) -> tuple[str, Usage]:
        """The step-back question: a more general one whose chunks give background."""
        done = self.host.generator(s.model).complete(
            self.host.prompts.get(s.step_back).render(input=query),
            DecodingParams(max_tokens=64, temperature=0.0))
        text = done.text.strip()
        return (text.splitlines()[0] if text else query), done.usage

    def _rerank(self, s: RerankStep, query: str, passages: list[dict[str, Any]],
                scope: Scope, span: dict[str, Any]) -> dict[str, Any]:
        if s.reranker == "fusion" or not passages:
            ranked = list(passages)
        else:
            scorer: LlmReranker | CrossEncoderReranker
            if s.reranker == "llm":
                scorer = LlmReranker(self.host.generator(s.model), self.host.prompts.get(s.prompt))
            else:
                scorer = self.cross_encoder(s.path)
            scores = scorer.scores(query, [str(p.get("text", "")) for p in passages])
            order = sorted(range(len(passages)), key=lambda i: (-scores[i], i))
            span.update(reranker=scorer.name, scores=[round(scores[i], 4) for i in order])
            ranked = [dict(passages[i], score=round(scores[i], 6)) for i in order]
            for p, i in zip(ranked, order, strict=True):
                h = scope.hits.get(p["chunk_id"])
                if h is not None:
                    scope.hits[h.chunk_id] = replace(h, score=scores[i])
        return {"passages": [dict(p, n=i) for i, p in enumerate(ranked[: s.k], 1)]}


def _cut(text: str) -> str:
    return text if len(text) <= _SPAN_CHARS else text[:_SPAN_CHARS] + "…"


def _shown(v: Any) -> Any:
    """A value as a span keeps it: long texts cut, passages by id and title."""
    if isinstance(v, str):
        return _cut(v)
    if isinstance(v, dict):
        if "chunk_id" in v and "text" in v:
            return {"n": v.get("n"), "chunk_id": v["chunk_id"], "title": v.get("title"),
                    "score": v.get("score")}
        return {k: _shown(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_shown(x) for x in v[:100]]
    return v

