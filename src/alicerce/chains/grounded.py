"""The steps that answer from documents: condensing a follow-up, rails at each stage, and a
generate step grounded in passages (RAG as a chain, see rag_plan.py).

A grounded generate step fits the best passages into a token budget, abstains without the
model when even the best one is a weak match (`abstain_below`, on the dense similarity,
which unlike fused scores is comparable across queries) or when the model says the sources
do not hold the answer, and keeps only the `[n]` markers that name a source it was shown.
While it streams, the streamable output rails of the guard step on its text release it a
sentence at a time and cut the generation when one blocks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from alicerce.chains import fusion
from alicerce.chains.answerability import judged
from alicerce.chains.answerable import answerable
from alicerce.chains.chat import condense, recent
from alicerce.chains.citations import (
    attach,
    citations,
    is_abstention,
    locate,
    reattribute,
    renumber,
)
from alicerce.chains.select import score, windows
from alicerce.chains.spec import CondenseStep, GenerateStep, GuardStep
from alicerce.chains.state import RunState, Stop, Turn
from alicerce.generate.params import DecodingParams
from alicerce.guard.base import Context
from alicerce.guard.canary import with_canary
from alicerce.guard.config import STREAMABLE
from alicerce.guard.rails import Outcome, Rails
from alicerce.guard.watch import StreamWatch
from alicerce.language import detect
from alicerce.observe.spans import Recorder
from alicerce.prompts.builtin import ABSTAIN
from alicerce.prompts.template import PromptTemplate
from alicerce.types import Citation, Hit, Message, TokenLogprob, Usage

if TYPE_CHECKING:
    from alicerce.chains.plan import Node
    from alicerce.chains.runner import Host
    from alicerce.generate.base import Generator as Model

_NORM = re.compile(r"[^\w]+", re.UNICODE)

# Span attributes that hold the model's text before the output rails: withheld from the
# trace when a rail blocks or redacts the answer.
WITHHELD: dict[str, tuple[str, ...]] = {"generate": ("output", "candidates"),
                                       "citations": ("raw", "text")}

Passages = list[dict[str, Any]]


@dataclass
class _Run:
    """What one generation produced, filled while it streams."""

    pieces: list[str] = field(default_factory=list)
    probs: list[TokenLogprob] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    first: float | None = None


class GroundedSteps:
    def __init__(self, host: Host, rails: Callable[[str, Sequence[Any]], Rails]) -> None:
        self.host, self.rails = host, rails

    # -- condense ------------------------------------------------------------------------
    def condense(self, s: CondenseStep, ins: Mapping[str, Any], state: RunState,
                 rec: Recorder) -> dict[str, Any]:
        message = str(ins["question"])
        gen = self.host.generator(s.model)
        kept = recent(_messages(ins.get("history") or []),
                      self.host.settings.chat_history_tokens, gen.count_tokens)
        if not kept:
            return {"question": message, "message": message}
        lang = (state.turn.language if state.turn else "") or detect(message)
        if s.rails:
            # The condenser is a model call and a span: it must see the redacted message
            # and history (a client's history may carry personal data too). A blocked text
            # is left as it is; the input rails refuse a blocked question after this.
            rails = self.rails("input", s.rails)
            message = _screened(rails, Message("user", message), lang).content
            kept = [_screened(rails, m, lang) for m in kept]
        with rec.span("condense", question=message, history=[m.content for m in kept]) as out:
            standalone, usage = condense(gen, self.host.prompts.get(s.prompt), kept, message,
                                         lang)
            out.update(output=standalone, prompt_tokens=usage.prompt_tokens,
                       completion_tokens=usage.completion_tokens)
        state.add(usage)
        return {"question": standalone, "message": message}

    # -- rails ---------------------------------------------------------------------------
    def guard(self, s: GuardStep, ins: Mapping[str, Any], state: RunState, rec: Recorder,
              span: dict[str, Any]) -> dict[str, Any]:
        rails = self.rails(s.stage, s.rails)
        if s.stage == "context":
            return self._screen(s, rails, ins, state, span)
        turn, text = state.turn, str(ins["text"])
        if s.stage == "input":
            ctx = Context(question=text, language=(turn.language if turn else "") or
                          detect(text))
            texts = [text]
            standalone = ins.get("standalone")
            if isinstance(standalone, str) and standalone and standalone != text:
                texts.append(standalone)
            done = []
            for t in texts:
                out = self._record(rails.run(t, ctx), state, span)
                if out.blocked is not None:
                    break
                done.append(out.text)
            result = {"text": done[0] if done else text}
            if "standalone" in ins:
                result["standalone"] = done[1] if len(done) > 1 else result["text"]
            if turn is not None and done:
                turn.question = done[0]
        else:
            ctx = (self._answer_context(turn) if turn is not None else
                   Context(question=text, language=detect(text),
                           sources=[str(p.get("text", "")) for p in ins.get("sources") or []]))
            out = self._record(rails.run(text, ctx), state, span)
            result = {"text": out.text}
            if turn is not None and out.blocked is not None:
                rec.withhold(WITHHELD, f"output:{out.blocked.rail}")
            elif turn is not None and out.text != text:  # redacted: the raw output must go
                rec.withhold(WITHHELD, "output rails (redacted)")
        rail = out.blocked.rail if out.blocked else ""
        if rail and s.on_block == "stop":
            state.stop = Stop(s.id, s.stage, rail, out.replace)
        return {**result, "blocked": bool(rail), "rail": rail}

    def _screen(self, s: GuardStep, rails: Rails, ins: Mapping[str, Any], state: RunState,
                span: dict[str, Any]) -> dict[str, Any]:
        """Context rails on each passage: blocked ones are dropped (an injection hidden in a
        document never reaches the model), redacted ones go on redacted."""
        question = str(ins.get("question") or "")
        ctx = Context(question, (state.turn.language if state.turn else "") or
                      detect(question or " "))
        kept, dropped, verdicts = [], [], []
        for p in ins["passages"]:
            out = rails.run(str(p.get("text", "")), ctx)
            verdicts += [dict(v.as_dict(), chunk_id=p.get("chunk_id")) for v in out.verdicts
                         if v.action != "allow"]
            if out.blocked is not None:
                dropped.append(p.get("chunk_id"))
            else:
                kept.append(dict(p, text=out.text))
        span.update(rails=rails.names(), passages=len(ins["passages"]), dropped=dropped,
                    verdicts=verdicts)
        state.verdicts += verdicts
        return {"passages": kept, "blocked": False, "rail": ""}

    def _record(self, out: Outcome, state: RunState, span: dict[str, Any]) -> Outcome:
        verdicts = [v.as_dict() for v in out.verdicts]
        span.setdefault("verdicts", []).extend(verdicts)
        span["blocked"] = out.blocked.rail if out.blocked else None
        state.verdicts += verdicts
        state.redactions.update(out.mapping)
        return out

    def _answer_context(self, turn: Turn) -> Context:
        system = next((m.content for m in turn.messages if m.role == "system"), "")
        sources = () if turn.abstained else tuple(h.text for h in turn.sources)
        return Context(turn.question, turn.language, sources, system, turn.canary,
                       [h.page for h in turn.sources if h.page is not None])

    # -- the grounded answer -------------------------------------------------------------
    def answer(self, node: Node, ins: Mapping[str, Any], params: DecodingParams,
               hits: Mapping[int, Hit], state: RunState,
               rec: Recorder) -> Generator[str, None, dict[str, Any]]:
        """Yields the answer's text as it is generated; returns the step's outputs."""
        s = node.step
        assert isinstance(s, GenerateStep) and s.grounded is not None
        g = s.grounded
        turn = state.turn or Turn(question=str(ins["question"]), stream=False)
        state.turn = turn
        turn.query = str(ins["question"])
        turn.language = turn.language or detect(turn.query)
        gen = self.host.generator(s.model, s.adapter)
        found = [hit_of(p, hits) for p in ins["passages"]]
        turn.timings["retrieve_ms"] = turn.ms()
        with rec.span("context", budget_tokens=g.context_tokens, floor=g.abstain_below) as out:
            best = max((h.scores.get("dense", 0.0) for h in found), default=0.0)
            weak = not found or best < g.abstain_below
            if weak:
                turn.sources = ()
            else:
                embedder = self.host.sentence_embedder()
                scored = (score(turn.query, found, embedder)
                          if g.select == "windows" or g.answerable_head_min > 0 else None)
                if g.select == "windows":
                    turn.sources = windows(turn.query, found, embedder, g.context_tokens,
                                           gen.count_tokens, least=g.context_min,
                                           drop=g.window_drop, scored=scored)
                else:
                    turn.sources = fit(found, g.context_tokens, gen.count_tokens)
                if scored is not None and g.answerable_head_min > 0:
                    weak = not judged(turn.query, found, scored, turn.sources, embedder.name,
                                      g.answerable_head_min, out)
                    turn.sources = () if weak else turn.sources
            kept = {h.chunk_id for h in turn.sources}
            out.update(best_dense=round(best, 4), weak=weak, select=g.select,
                       kept=[h.chunk_id for h in turn.sources],
                       dropped=[h.chunk_id for h in found if h.chunk_id not in kept])
        template = self.host.prompts.get(s.prompt)
        watched = node.watch.rails if node.watch is not None else []
        canary = self.host.canary if any(isinstance(r, dict) and r.get("rail") == "canary"
                                         for r in watched) else ""
        with rec.span("prompt", prompt=template.ref, language=turn.language,
                      extractiveness=g.extractiveness) as out:
            shown = turn.sources if g.fusion == "prompt" else turn.sources[:1]
            messages = self._render(template, turn, g.extractiveness, shown, "")
            # stored without the canary: the secret stays in this process
            out["messages"] = [{"role": m.role, "content": m.content} for m in messages]
            out["sources"] = locate(messages, shown)
            if g.fusion != "prompt":
                out.update(fusion=g.fusion, documents=min(g.documents, len(turn.sources)))
            if canary and messages and messages[0].role == "system":
                messages = self._render(template, turn, g.extractiveness, shown, canary)
                out["canary"] = True
        turn.messages, turn.canary = messages, canary
        if not weak and g.answerable_min > 0 and g.fusion == "prompt":
            weak = not self._answerable(gen, messages, g.answerable_min, state, rec)
        if weak:
            yield ABSTAIN[turn.language]
            return self._finish(turn, ABSTAIN[turn.language], True, rec)
        if g.fusion != "prompt":
            text = self._fused(s, template, turn, params, state, rec)
            yield text
            return self._finish(turn, text, is_abstention(text), rec)
        g0 = time.perf_counter()
        run = _Run()
        watch = (StreamWatch(Rails("output", [r for r in self.rails(
            "output", node.watch.rails).rails if r.guard.name in STREAMABLE]),
            self._answer_context(turn), self.host.settings.stream_release)
            if turn.stream and node.watch is not None else None)
        if turn.stream:
            yield from _stream(gen.stream(messages, params), run, watch)
        else:
            done = gen.complete(messages, params)
            run.pieces, run.usage, run.first = [done.text], done.usage, time.perf_counter()
            run.probs = list(done.choices[0].logprobs)
            yield done.text
        turn.timings["first_token_ms"] = ((run.first or time.perf_counter()) - turn.t0) * 1000
        text = "".join(run.pieces).strip()
        state.add(run.usage)
        rec.add("generate", (time.perf_counter() - g0) * 1000, model=gen.name,
                backend=gen.backend, params=params.as_dict(), stream=turn.stream,
                prompt_tokens=run.usage.prompt_tokens,
                completion_tokens=run.usage.completion_tokens,
                cached_tokens=run.usage.cached_tokens,
                time_to_first_token_ms=round(((run.first or g0) - g0) * 1000, 3), output=text)
        turn.logprobs = tuple(run.probs)
        if watch is not None and watch.blocked is not None:
            assert node.watch is not None and watch.blocked.blocked is not None
            span: dict[str, Any] = {}
            self._record(watch.blocked, state, span)
            rec.add(node.watch.id, sum(v.latency_ms for v in watch.blocked.verdicts), **span)
            rail = watch.blocked.blocked.rail
            rec.withhold(WITHHELD, f"output:{rail}")
            state.stop = Stop(node.watch.id, "output", rail, watch.blocked.replace)
            return {"text": "", "citations": [], "abstained": True, "sources": []}
        return self._finish(turn, text, is_abstention(text), rec)

    def _answerable(self, gen: Model, messages: Sequence[Message], floor: float,
                    state: RunState, rec: Recorder) -> bool:
        """Whether the sources answer the question (P(yes) at least `floor`)."""
        lang = state.turn.language if state.turn else "en"
        with rec.span("answerable", min=floor) as out:
            p, usage = answerable(gen, messages, lang)
            out.update(p_yes=round(p, 4), abstain=p < floor, prompt_tokens=usage.prompt_tokens,
                       cached_tokens=usage.cached_tokens)
        state.add(usage)
        return p >= floor

    def _render(self, template: PromptTemplate, turn: Turn, extractiveness: str,
                sources: Sequence[Hit], canary: str) -> tuple[Message, ...]:
        messages = tuple(template.render(
            question=turn.query, language=turn.language, extractiveness=extractiveness,
            abstain=ABSTAIN[turn.language],
            sources=[{"n": i, "title": h.title or h.doc_key, "section": h.section,
                      "text": h.text} for i, h in enumerate(sources, 1)]))
        if canary and messages and messages[0].role == "system":
            messages = (Message("system", with_canary(messages[0].content, canary)),
                        *messages[1:])
        return messages

    def _fused(self, s: GenerateStep, template: PromptTemplate, turn: Turn,
               params: DecodingParams, state: RunState, rec: Recorder) -> str:
        """RAG-Sequence or RAG-Token over the best passages, its markers pointing at the
        passage the answer rests on."""
        assert s.grounded is not None
        gen = self.host.generator(s.model, s.adapter)
        docs = turn.sources[: s.grounded.documents]
        g0 = time.perf_counter()
        fuse = fusion.sequence if s.grounded.fusion == "sequence" else fusion.token
        out = fuse(gen, lambda h: self._render(template, turn, s.grounded.extractiveness
                                               if s.grounded else "", (h,), turn.canary),
                   docs, params)
        state.add(out.usage)
        text = renumber(out.text, out.best + 1)
        rec.add("generate", (time.perf_counter() - g0) * 1000, model=gen.name,
                backend=gen.backend, params=params.as_dict(), stream=False,
                fusion=s.grounded.fusion, prior=[round(x, 4) for x in out.prior],
                scores=[round(x, 4) for x in out.scores], calls=out.calls,
                candidates=list(out.candidates), prompt_tokens=out.usage.prompt_tokens,
                completion_tokens=out.usage.completion_tokens, output=text)
        turn.timings["first_token_ms"] = turn.ms()
        return text

    def _finish(self, turn: Turn, text: str, abstained: bool, rec: Recorder) -> dict[str, Any]:
        cites: tuple[Citation, ...] = ()
        with rec.span("citations", raw=text) as out:
            if abstained:
                text = ABSTAIN[turn.language]
            else:
                text, cites = citations(attach(reattribute(text, turn.sources), turn.sources),
                                        turn.sources)
            out.update(abstained=abstained, cited=[c.n for c in cites], text=text)
        turn.citations, turn.abstained = cites, abstained
        turn.timings["total_ms"] = turn.ms()
        turn.timings["generate_ms"] = turn.timings["total_ms"] - turn.timings["retrieve_ms"]
        return {"text": text, "citations": [asdict(c) for c in cites], "abstained": abstained,
                "sources": [passage(i, h) for i, h in enumerate(turn.sources, 1)]}


def _stream(deltas: Any, run: _Run, watch: StreamWatch | None) -> Generator[str, None, None]:
    """The model's text as it comes (a sentence at a time when output rails watch),
    stopping the generation when a rail blocks."""
    try:
        for delta in deltas:
            if delta.text:
                run.first = run.first or time.perf_counter()
                run.pieces.append(delta.text)
                shown = watch.feed(delta.text) if watch else delta.text
                if shown:
                    yield shown
            run.usage = delta.usage or run.usage
            run.probs += delta.logprobs
            if watch and watch.blocked:
                break  # cut the generation: closing the stream frees its slot
    finally:
        close = getattr(deltas, "close", None)
        if close is not None:
            close()
    if watch and (rest := watch.finish()):
        yield rest


def fit(hits: Sequence[Hit], budget: int, count: Callable[[str], int]) -> tuple[Hit, ...]:
    """Best-first chunks that fit the token budget, duplicates of a kept text dropped; the
    best one even when it alone is over budget (a budget sized for windows)."""
    kept: list[Hit] = []
    seen: set[str] = set()
    left = budget
    for hit in hits:
        key = _NORM.sub(" ", hit.text.lower()).strip()
        cost = count(hit.text) + 12  # the "[n] title — section" line
        if key in seen or cost > left:
            continue
        kept.append(hit)
        seen.add(key)
        left -= cost
    return tuple(kept) if kept or not hits else (hits[0],)


def passage(n: int, h: Hit) -> dict[str, Any]:
    """A retrieved chunk as a chain value (PASSAGE_FIELDS)."""
    return {"n": n, "text": h.text, "title": h.title or h.doc_key, "section": h.section,
            "doc": h.doc_key, "chunk_id": h.chunk_id, "score": round(h.score, 6),
            "page": h.page, "source": h.source}


def hit_of(p: Mapping[str, Any], hits: Mapping[int, Hit]) -> Hit:
    """The Hit behind a passage value (its text and score as the steps left them); a
    passage no retrieve step found (a transform's) becomes a Hit of its own."""
    h = hits.get(p.get("chunk_id", -1)) if isinstance(p.get("chunk_id"), int) else None
    text, score = str(p.get("text", "")), float(p.get("score") or 0.0)
    if h is None:
        return Hit(int(p.get("chunk_id") or 0), str(p.get("doc", "")), score, text,
                   str(p.get("title", "")), str(p.get("section", "")), p.get("page"),
                   str(p.get("source", "")), {})
    if text != h.text:
        h = replace(h, text=text)
    return h if score == round(h.score, 6) else replace(h, score=score)


def _messages(history: Sequence[Any]) -> list[Message]:
    return [m if isinstance(m, Message) else Message(
        "assistant" if m.get("role") == "assistant" else "user", str(m["content"]))
        for m in history]


def _screened(rails: Rails, message: Message, lang: str) -> Message:
    """`message` as the input rails redact it (unchanged when they would block it)."""
    out = rails.run(message.content, Context(message.content, lang))
    return message if out.blocked else replace(message, content=out.text)
