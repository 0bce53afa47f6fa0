"""Grounded answers: retrieve → fit sources to a token budget → numbered prompt → generate →
citations.

Abstention happens twice: before the model, when even the best chunk is a weak match
(`abstain_below`, on the dense similarity, which unlike fused scores is comparable across
queries); and after it, when the model says the sources do not hold the answer. Citations
`[n]` that do not name a source given to the model are removed from the text, never
reported: an answer can only cite what it was shown.

Guard rails (docs/guardrails.md) wrap the chain: input rails before retrieval (a redacted
question is what retrieval and the model see), context rails on the retrieved passages
(flagged ones are dropped), output rails on the answer, and on a stream a sentence at a
time, cutting the generation when one blocks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from alicerce.chains.language import detect
from alicerce.generate.base import Generator
from alicerce.generate.params import DecodingParams
from alicerce.guard.base import REFUSE, Context
from alicerce.guard.canary import with_canary
from alicerce.guard.config import Guards
from alicerce.guard.rails import Outcome
from alicerce.guard.watch import StreamWatch
from alicerce.observe.spans import Recorder
from alicerce.prompts.builtin import ABSTAIN
from alicerce.prompts.template import PromptTemplate
from alicerce.store.query import STOPWORDS
from alicerce.types import Answer, Citation, Hit, Message, TokenLogprob, Usage

_CITE = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
_SPACES = re.compile(r"[ \t]+([.,;:!?])")
_NORM = re.compile(r"[^\w]+", re.UNICODE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE = re.compile(r"((?<=[.!?])\s+|\n+)")
_REPEAT = re.compile(r"(\[\d+\])([.,;:]?)\s*\1")
_LIST_MARK = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
_LIST_NUMBER = re.compile(r"\s*\d{1,3}[.)]?\s*")

Retrieve = Callable[[str, Recorder], list[Hit]]
Stream = Iterator["str | Answer"]

# Span attributes that hold the model's text before the output rails: withheld from the
# trace when a rail blocks or redacts the answer.
WITHHELD = {"generate": ("output",), "citations": ("raw", "text")}


@dataclass
class RagRequest:
    question: str
    params: DecodingParams
    language: str = ""
    extractiveness: str = "balanced"
    step_back: bool = False
    standalone: str = ""
    versions: dict[str, Any] = field(default_factory=dict)
    spans: Recorder = field(default_factory=Recorder)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    redactions: dict[str, str] = field(default_factory=dict)


@dataclass
class _Run:
    """What one generation produced, filled while it streams."""

    pieces: list[str] = field(default_factory=list)
    probs: list[TokenLogprob] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    first: float | None = None


@dataclass(frozen=True)
class Prepared:
    """Everything decided before the model runs."""

    request: RagRequest
    language: str
    query: str
    sources: tuple[Hit, ...]
    messages: tuple[Message, ...]
    weak: bool
    timings: dict[str, float]
    usage: Usage = field(default_factory=Usage)


class RagChain:
    def __init__(self, retrieve: Retrieve, generator: Generator, prompt: PromptTemplate,
                 context_tokens: int, abstain_below: float,
                 step_back: PromptTemplate | None = None, guards: Guards | None = None,
                 canary: str = "") -> None:
        self._retrieve, self._gen, self._prompt = retrieve, generator, prompt
        self._budget, self._floor, self._step_back = context_tokens, abstain_below, step_back
        self._guards = guards or Guards()
        self._canary = canary if self._guards.uses_canary() else ""

    # -- stages --------------------------------------------------------------------------
    def prepare(self, req: RagRequest) -> Prepared:
        t0 = time.perf_counter()
        query = req.standalone or req.question
        language = req.language or detect(query)
        timings: dict[str, float] = {}
        usage = Usage()
        rec = req.spans
        hits = self._retrieve(query, rec)
        if req.step_back and self._step_back is not None:
            with rec.span("step_back", question=query) as out:
                general, usage = self._general_question(query, req.params)
                out.update(output=general, prompt_tokens=usage.prompt_tokens,
                           completion_tokens=usage.completion_tokens)
            hits = interleave([hits, self._retrieve(general, rec)])
            timings["step_back_ms"] = _ms(t0)
        if self._guards.context:
            hits = self._screen(hits, req, language)
        timings["retrieve_ms"] = _ms(t0)
        with rec.span("context", budget_tokens=self._budget, floor=self._floor) as out:
            best = max((h.scores.get("dense", 0.0) for h in hits), default=0.0)
            weak = not hits or best < self._floor
            sources = () if weak else self.fit(hits)
            out.update(best_dense=round(best, 4), weak=weak,
                       kept=[h.chunk_id for h in sources],
                       dropped=[h.chunk_id for h in hits if h not in sources])
        with rec.span("prompt", prompt=self._prompt.ref, language=language,
                      extractiveness=req.extractiveness) as out:
            messages = tuple(self._prompt.render(
                question=query, language=language, extractiveness=req.extractiveness,
                abstain=ABSTAIN[language],
                sources=[{"n": i, "title": h.title or h.doc_key, "section": h.section,
                          "text": h.text} for i, h in enumerate(sources, 1)]))
            # stored without the canary: the secret stays in this process
            out["messages"] = [{"role": m.role, "content": m.content} for m in messages]
            if self._canary and messages and messages[0].role == "system":
                messages = (Message("system", with_canary(messages[0].content, self._canary)),
                            *messages[1:])
                out["canary"] = True
        return Prepared(req, language, query, sources, messages, weak, timings, usage)

    def fit(self, hits: Sequence[Hit]) -> tuple[Hit, ...]:
        """Best-first chunks that fit the token budget; duplicates of a kept text dropped."""
        kept: list[Hit] = []
        seen: set[str] = set()
        left = self._budget
        for hit in hits:
            key = _NORM.sub(" ", hit.text.lower()).strip()
            cost = self._gen.count_tokens(hit.text) + 12  # the "[n] title — section" line
            if key in seen or cost > left:
                continue
            kept.append(hit)
            seen.add(key)
            left -= cost
        return tuple(kept)

    def stream(self, req: RagRequest, stream: bool = True) -> Stream:
        """Text pieces as they are generated, then the finished Answer."""
        t0 = time.perf_counter()
        if self._guards.input:
            refused = self._check_input(req)
            if refused is not None:
                language = req.language or detect(req.question)
                yield REFUSE[language]
                yield self._refusal(req, language, refused, t0)
                return
        prep = self.prepare(req)
        if prep.weak:
            text = ABSTAIN[prep.language]
            yield text
            yield self._finish(prep, text, Usage(), t0, abstained=True)
            return
        g0 = time.perf_counter()
        run = _Run()
        watch = StreamWatch(self._guards.streamable(), self._context(prep)) \
            if stream and self._guards.output else None
        if stream:
            yield from self._stream(prep, run, watch)
        else:
            done = self._gen.complete(prep.messages, req.params)
            run.pieces, run.usage, run.first = [done.text], done.usage, time.perf_counter()
            run.probs = list(done.choices[0].logprobs)
            yield done.text
        prep.timings["first_token_ms"] = ((run.first or time.perf_counter()) - t0) * 1000
        text = "".join(run.pieces).strip()
        req.spans.add("generate", _ms(g0), model=self._gen.name, backend=self._gen.backend,
                      params=req.params.as_dict(), stream=stream,
                      prompt_tokens=run.usage.prompt_tokens,
                      completion_tokens=run.usage.completion_tokens,
                      cached_tokens=run.usage.cached_tokens,
                      time_to_first_token_ms=round(((run.first or g0) - g0) * 1000, 3),
                      output=text)
        if watch and watch.blocked:
            self._record(req, watch.blocked, "output_guards")
            verdict = watch.blocked.blocked
            req.spans.withhold(WITHHELD, f"output:{verdict.rail if verdict else 'rails'}")
            yield self._refusal(req, prep.language, watch.blocked, t0, prep, run.usage)
            return
        answer = self._finish(prep, text, run.usage, t0, abstained=is_abstention(text))
        if self._guards.output:
            answer = self._check_output(answer, prep)
        yield replace(answer, logprobs=tuple(run.probs))

    def _stream(self, prep: Prepared, run: _Run, watch: StreamWatch | None) -> Iterator[str]:
        """The model's text as it comes (a sentence at a time when output rails watch),
        stopping the generation when a rail blocks."""
        deltas = self._gen.stream(prep.messages, prep.request.params)
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

    # -- guards --------------------------------------------------------------------------
    def _check_input(self, req: RagRequest) -> Outcome | None:
        """Input rails on the question (and the condensed question of a chat turn); the
        redacted text replaces it. The blocking outcome, if any."""
        ctx = Context(question=req.question, language=req.language or detect(req.question))
        texts = [req.question] + ([req.standalone] if req.standalone
                                  and req.standalone != req.question else [])
        for i, text in enumerate(texts):
            out = self._record(req, self._guards.input.run(text, ctx), "input_guards")
            if out.blocked is not None:
                return out
            if i == 0:
                if req.standalone == req.question:  # one text: the redaction covers both
                    req.standalone = out.text
                req.question = out.text
            else:
                req.standalone = out.text
        return None

    def _screen(self, hits: list[Hit], req: RagRequest, language: str) -> list[Hit]:
        """Context rails on each retrieved passage: blocked ones are dropped (an injection
        hidden in a document never reaches the model), redacted ones go on redacted."""
        kept, dropped = [], []
        verdicts: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        for hit in hits:
            out = self._guards.context.run(hit.text, Context(req.question, language))
            verdicts += [dict(v.as_dict(), chunk_id=hit.chunk_id) for v in out.verdicts
                         if v.action != "allow"]
            if out.blocked is not None:
                dropped.append(hit.chunk_id)
            else:
                kept.append(replace(hit, text=out.text) if out.text != hit.text else hit)
        req.spans.add("context_guards", _ms(t0), rails=self._guards.context.names(),
                      passages=len(hits), dropped=dropped, verdicts=verdicts)
        req.verdicts += verdicts
        return kept

    def _context(self, prep: Prepared) -> Context:
        system = next((m.content for m in prep.messages if m.role == "system"), "")
        return Context(prep.request.question, prep.language,
                       [h.text for h in prep.sources], system, self._canary,
                       [h.page for h in prep.sources if h.page is not None])

    def _check_output(self, answer: Answer, prep: Prepared) -> Answer:
        ctx = self._context(prep)
        if answer.abstained:
            ctx = replace(ctx, sources=())  # an abstention claims nothing
        out = self._record(prep.request, self._guards.output.run(answer.text, ctx),
                           "output_guards")
        if out.blocked is not None:
            prep.request.spans.withhold(WITHHELD, f"output:{out.blocked.rail}")
            text = (ABSTAIN if out.replace == "abstain" else REFUSE)[prep.language]
            return replace(answer, text=text, citations=(), abstained=True,
                           guards=tuple(prep.request.verdicts),
                           blocked=f"output:{out.blocked.rail}")
        if out.text != answer.text:  # redacted: the raw output must not outlive it
            prep.request.spans.withhold(WITHHELD, "output rails (redacted)")
        return replace(answer, text=out.text, guards=tuple(prep.request.verdicts),
                       redactions={**prep.request.redactions, **out.mapping})

    def _record(self, req: RagRequest, out: Outcome, span: str) -> Outcome:
        ms = sum(v.latency_ms for v in out.verdicts)
        verdicts = [v.as_dict() for v in out.verdicts]
        req.spans.add(span, ms, verdicts=verdicts,
                      blocked=out.blocked.rail if out.blocked else None)
        req.verdicts += verdicts
        req.redactions.update(out.mapping)
        return out

    def _refusal(self, req: RagRequest, language: str, out: Outcome, t0: float,
                 prep: Prepared | None = None, usage: Usage | None = None) -> Answer:
        assert out.blocked is not None
        text = (ABSTAIN if out.replace == "abstain" else REFUSE)[language]
        timings = dict(prep.timings) if prep else {}
        timings["total_ms"] = _ms(t0)
        return Answer(req.question, text, (), prep.sources if prep else (), True, language,
                      usage or Usage(), timings,
                      {**req.versions, "decoding": req.params.as_dict()},
                      standalone_question=req.standalone, guards=tuple(req.verdicts),
                      blocked=f"{out.blocked.stage}:{out.blocked.rail}")

    # -- helpers -------------------------------------------------------------------------
    def _general_question(self, query: str, params: DecodingParams) -> tuple[str, Usage]:
        assert self._step_back is not None
        done = self._gen.complete(self._step_back.render(input=query),
                                  replace(params, max_tokens=64, n=1, format="text",
                                          json_schema=None, logprobs=False, top_logprobs=0))
        return done.text.strip().splitlines()[0] if done.text.strip() else query, done.usage

    def _finish(self, prep: Prepared, text: str, usage: Usage, t0: float,
                abstained: bool) -> Answer:
        prep.timings["total_ms"] = _ms(t0)
        prep.timings["generate_ms"] = prep.timings["total_ms"] - prep.timings["retrieve_ms"]
        with prep.request.spans.span("citations", raw=text) as out:
            if abstained:
                cites: tuple[Citation, ...] = ()
                text = ABSTAIN[prep.language]
            else:
                text, cites = citations(attach(reattribute(text, prep.sources),
                                               prep.sources), prep.sources)
            out.update(abstained=abstained, cited=[c.n for c in cites], text=text)
        total = Usage(usage.prompt_tokens + prep.usage.prompt_tokens,
                      usage.completion_tokens + prep.usage.completion_tokens,
                      usage.cached_tokens)
        versions = {**prep.request.versions, "decoding": prep.request.params.as_dict()}
        return Answer(prep.request.question, text, cites, prep.sources, abstained,
                      prep.language, total, prep.timings, versions,
                      standalone_question=prep.query if prep.request.standalone else "",
                      guards=tuple(prep.request.verdicts),
                      redactions=dict(prep.request.redactions))


def reattribute(text: str, sources: Sequence[Hit]) -> str:
    """Move a citation to the source that holds the figures of the claim it closes, when the
    cited source does not. A claim is the text since the previous marker. Small models often
    cite a neighbouring source; figures ("45 dias") are the checkable part of most answers,
    and they survive translation."""
    out, prev = [], 0
    for m in _CITE.finditer(text):
        claim = text[prev : m.start()]
        out += [claim, _best_marker(m.group(0), m.group(1), claim, sources)]
        prev = m.end()
    return "".join([*out, text[prev:]])


def _best_marker(marker: str, inner: str, claim: str, sources: Sequence[Hit]) -> str:
    numbers = set(_NUMBER.findall(claim))
    if not numbers:
        return marker
    cited = {int(n) for n in re.split(r"\s*[,;]\s*", inner)}
    holds = [i for i, h in enumerate(sources, 1) if numbers <= set(_NUMBER.findall(h.text))]
    if not holds or cited & set(holds):
        return marker
    words = set(_NORM.sub(" ", claim.lower()).split())
    best = max(holds, key=lambda i: (len(words & set(
        _NORM.sub(" ", sources[i - 1].text.lower()).split())), -i))
    return f"[{best}]"


def attach(text: str, sources: Sequence[Hit]) -> str:
    """Cite sentences the model left uncited, where one source plainly holds them: all their
    figures, or most of their content words. Small models often answer correctly from the
    sources and forget the marker; a sentence no source supports stays uncited."""
    parts = _SENTENCE.split(text)
    vocab = [set(_words(h.text)) for h in sources]
    numbers = [set(_NUMBER.findall(h.text)) for h in sources]
    for i in range(0, len(parts), 2):  # separators sit at odd positions
        sentence = parts[i]
        if _CITE.search(sentence) or not sentence.strip() or _LIST_NUMBER.fullmatch(sentence):
            continue  # "1." of a numbered list is no sentence to cite
        claim = _LIST_MARK.sub("", sentence)
        words, figures = set(_words(claim)), set(_NUMBER.findall(claim))
        best, score = 0, 0.0
        for n, (vs, ns) in enumerate(zip(vocab, numbers, strict=True), 1):
            if figures and not figures <= ns:
                continue
            share = len(words & vs) / len(words) if words else 0.0
            value = share + (1.0 if figures else 0.0)
            if value > score and (figures or (len(words) >= 3 and share >= 0.6)):
                best, score = n, value
        if best:
            body = sentence.rstrip()
            end = len(body) - len(body.rstrip(".!?:;"))
            parts[i] = f"{body[: len(body) - end]} [{best}]{body[len(body) - end:]}" + \
                sentence[len(body):]
    return "".join(parts)


def _words(text: str) -> list[str]:
    return [w for w in _NORM.sub(" ", text.lower()).split()
            if w not in STOPWORDS and not w.isdigit() and len(w) > 2]


def citations(text: str, sources: Sequence[Hit]) -> tuple[str, tuple[Citation, ...]]:
    """Keep `[n]` markers that name a given source; drop the rest from the text."""
    found: dict[int, Citation] = {}

    def keep(match: re.Match[str]) -> str:
        valid = []
        for part in re.split(r"\s*[,;]\s*", match.group(1)):
            n = int(part)
            if 1 <= n <= len(sources):
                valid.append(n)
                h = sources[n - 1]
                found.setdefault(n, Citation(n, h.chunk_id, h.doc_key, h.title, h.section,
                                             h.page, h.source, h.score))
        return "".join(f"[{n}]" for n in valid)

    cleaned = _SPACES.sub(r"\1", _CITE.sub(keep, text))
    cleaned = _REPEAT.sub(r"\1\2", cleaned).strip()  # "despesa [1]. [1]" -> "despesa [1]."
    return cleaned, tuple(sorted(found.values(), key=lambda c: c.n))


def interleave(ranked: Sequence[Sequence[Hit]]) -> list[Hit]:
    """Round-robin over ranked lists, dropping repeats: every list (the step-back question's,
    each collection's) gets its best chunks in."""
    out: dict[int, Hit] = {}
    for depth in range(max((len(r) for r in ranked), default=0)):
        for hits in ranked:
            if depth < len(hits):
                out.setdefault(hits[depth].chunk_id, hits[depth])
    return list(out.values())


def is_abstention(text: str) -> bool:
    return _starts_abstaining(text) or not text.strip()


_LEADING_MARKERS = re.compile(r"^\s*(?:\[\d+(?:\s*,\s*\d+)*\]\s*[.:]?\s*)+")


def _starts_abstaining(text: str) -> bool:
    """Small models sometimes put a marker first: "[1] Não encontrei isso nos documentos."."""
    head = _NORM.sub(" ", _LEADING_MARKERS.sub("", text).lower()).strip()
    return any(head.startswith(_NORM.sub(" ", a.lower()).strip()) for a in ABSTAIN.values())


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
