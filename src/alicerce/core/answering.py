"""Answering: grounded answers, chat turns and OpenAI-style messages through the RAG
chain, each traced with its lineage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from alicerce.apps.registry import AppVersion
from alicerce.chains.chat import condense, recent
from alicerce.chains.language import detect
from alicerce.chains.rag import RagChain, RagRequest, Stream, interleave
from alicerce.config import Extractiveness, SearchMode
from alicerce.core.apps import AppRef, Apps
from alicerce.errors import AlicerceError, InputError
from alicerce.generate import Generator
from alicerce.generate.params import DecodingParams
from alicerce.guard.base import Context
from alicerce.guard.config import Guards
from alicerce.observe.spans import Recorder
from alicerce.store.base import Filters, StoredCollection
from alicerce.types import Answer, Hit, Message
from alicerce.version import __version__


class Answering(Apps):
    """Grounded answers and chat turns from a RAG app or a bare collection."""

    def ask(self, question: str, app: str | AppRef, **options: Any) -> Answer:
        """A grounded answer with citations; options as for `ask_stream`."""
        answer: Answer | None = None
        for item in self._rag(question, app, stream=False, **options):
            if isinstance(item, Answer):
                answer = item
        assert answer is not None
        return answer

    def ask_stream(self, question: str, app: str | AppRef, **options: Any) -> Stream:
        """Yields answer text as generated, then the finished Answer.

        `app` is a deployed app (its labelled version: `name`, `name@N`, `name@label`) or a
        collection answered with the settings' defaults. Options override the app's: model,
        params (DecodingParams or dict), k, mode, filters (added to the app's), step_back,
        extractiveness, prompt (name[@version|label]), language, history, standalone,
        guards (False: the app's rails off, for red-team baselines), extra_collections
        (searched too: the red-team's planted documents).
        """
        return self._rag(question, app, stream=True, **options)

    def chat(self, message: str, app: str | AppRef, conversation_id: str | None = None, *,
             stream: bool = False, **options: Any) -> tuple[str, Stream]:
        """One chat turn: (conversation id, stream of text then Answer); the turn is saved."""
        self._check_text(message)
        self.decoding(options.get("params"))  # bad input fails before any model call
        app = self.resolve_app(app)
        self.app_collections(app)
        caller = options.get("caller", "local")
        cid = self.conversations.resolve(app.ref, conversation_id, caller)
        inner = self._follow_up(self.conversations.history(cid), message, app, stream,
                                options)

        def turn() -> Stream:
            for item in inner:
                if isinstance(item, Answer):
                    self.conversations.append(cid, app.ref, item, caller)
                yield item
        return cid, turn()

    def ask_messages(self, messages: Sequence[Message], app: str | AppRef, *,
                     stream: bool = False, **options: Any) -> Stream:
        """An answer to the last user message, earlier turns as history (OpenAI-style chat).

        System messages are not passed on: the app's prompt sets the rules.
        """
        if not messages or messages[-1].role != "user":
            raise InputError("the last message must be the user's question",
                             hint="end `messages` with {\"role\": \"user\", ...}")
        history = [m for m in messages[:-1] if m.role in ("user", "assistant")]
        self._check_text(messages[-1].content)
        self.decoding(options.get("params"))
        app = self.resolve_app(app)
        self.app_collections(app)
        return self._follow_up(history, messages[-1].content, app, stream, options)

    def _follow_up(self, history: Sequence[Message], message: str, app: AppRef,
                   stream: bool, options: dict[str, Any]) -> Stream:
        spec = self.rag_app(app)
        if spec is not None and "condense" not in spec.spec["chain"]:
            return self._rag(message, app, stream=stream, **options)
        rec = Recorder()
        gen = self.generator(options.get("model") or (spec.spec["model"]["name"] if spec
                                                      else None))
        lang = options.pop("language", None) or detect(message)
        kept = recent(history, self.settings.chat_history_tokens, gen.count_tokens)
        guards = self.guards(spec) if options.get("guards", True) else Guards()
        if kept and guards.input:
            # The condenser is a model call and a span: it must see the redacted message
            # and history (a client's history may carry personal data too). A blocked text
            # is left as it is; the chain refuses a blocked question before retrieval.
            message = _screened(guards, Message("user", message), lang).content
            kept = [_screened(guards, m, lang) for m in kept]
        standalone = message
        if kept:
            with rec.span("condense", question=message,
                          history=[m.content for m in kept]) as out:
                standalone, usage = condense(gen, self.prompts.get("condense-question"),
                                             kept, message, lang)
                out.update(output=standalone, prompt_tokens=usage.prompt_tokens,
                           completion_tokens=usage.completion_tokens)
        return self._rag(message, app, stream=stream, standalone=standalone,
                         language=lang, spans=rec, **options)

    def _rag(self, question: str, app: str | AppRef, *, stream: bool,
             model: str | None = None,
             params: DecodingParams | dict[str, Any] | None = None, k: int | None = None,
             mode: SearchMode | None = None, filters: Filters | None = None,
             step_back: bool | None = None, extractiveness: Extractiveness | None = None,
             prompt: str | None = None, language: str | None = None,
             standalone: str = "", caller: str = "local",
             spans: Recorder | None = None, guards: bool = True,
             extra_collections: Sequence[str] = ()) -> Stream:
        rec = spans or Recorder()
        ref = self.resolve_app(app)
        version = self.rag_app(ref)
        name = ref.name
        try:
            self._check_text(question)
            spec = version.spec if version else None
            retrieval: dict[str, Any] = spec["retrieval"] if spec else {}
            colls = ([self._collection(c["name"]) for c in spec["collections"]] if spec
                     else [self._collection(ref.ref)])
            colls += [self._collection(c) for c in extra_collections]
            template = self.prompts.get(prompt or (spec["prompt"] if spec else "rag-answer"))
            decoding = self._decoding(params, version)
            if decoding.n > 1:
                raise InputError("an answer is one candidate (n=1)",
                                 hint="use `alicerce generate --n N` for several candidates")
            gen = self.generator(model or (spec["model"]["name"] if spec else None))
            retrieve = self._retriever(colls, retrieval, mode, k, filters)
            chain = RagChain(retrieve, gen, template,
                             retrieval.get("context_tokens", self.settings.answer_context_tokens),
                             retrieval.get("abstain_below", self.settings.abstain_below),
                             self.prompts.get("step-back"),
                             self.guards(version) if guards else Guards(), self.canary)
            if step_back is None:
                step_back = bool(spec and "step_back" in spec["chain"])
            versions = self._versions(colls, template.ref, gen, version)
            req = RagRequest(question, decoding, language or "",
                             extractiveness or (spec["extractiveness"] if spec else None)
                             or self.settings.extractiveness, step_back,
                             standalone=standalone, versions=versions, spans=rec)
        except AlicerceError as exc:
            self.traces.record(name, caller, question, error=str(exc), spans=rec.spans,
                               app_version=version.version if version else None,
                               latency_ms=rec.elapsed_ms())
            raise
        return self._traced(chain.stream(req, stream=stream), name, caller, rec, version)

    def _retriever(self, colls: Sequence[StoredCollection], retrieval: dict[str, Any],
                   mode: SearchMode | None, k: int | None,
                   filters: Filters | None) -> Callable[[str, Recorder], list[Hit]]:
        """Search over an app's collections with its retrieval settings, options first."""
        search = self._params(mode or retrieval.get("mode"),
                              k or retrieval.get("k") or self.settings.answer_k,
                              retrieval.get("alpha"))
        where = {**(filters or {}), **retrieval.get("filters", {})} or None
        searchers = [(c, self._searcher(c)) for c in colls]
        rerank = self.reranker(retrieval)
        pool = (self._params(search.mode, max(search.k, retrieval["candidates"]), search.alpha)
                if rerank is not None else search)

        def retrieve(q: str, r: Recorder) -> list[Hit]:
            hits = interleave([s.search(c, q, pool, where, spans=r)
                               for c, s in searchers])[:pool.k]
            if rerank is not None and hits:
                with r.span("rerank", reranker=rerank.name, candidates=len(hits)) as out:
                    scores = rerank.scores(q, [h.text for h in hits])
                    order = sorted(range(len(hits)), key=lambda i: (-scores[i], i))
                    hits = [replace(hits[i], score=scores[i]) for i in order]
                    out.update(scores=[round(scores[i], 4) for i in order],
                               kept=[h.chunk_id for h in hits[:search.k]])
            return hits[:search.k]
        return retrieve

    def retrieve(self, question: str, app: str | AppRef, *, k: int | None = None,
                 filters: Filters | None = None) -> list[Hit]:
        """What `app` retrieves for `question` (its collections, mode, alpha and filters),
        without generating: retrieval evaluation scores this."""
        ref = self.resolve_app(app)
        version = self.rag_app(ref)
        spec = version.spec if version else None
        colls = ([self._collection(c["name"]) for c in spec["collections"]] if spec
                 else [self._collection(ref.ref)])
        return self._retriever(colls, spec["retrieval"] if spec else {}, None, k,
                               filters)(question, Recorder())

    def answer_versions(self, app: str | AppRef, model: str | None = None,
                        prompt: str | None = None) -> dict[str, str]:
        """What an answer from `app` would depend on now (the cache's key)."""
        ref = self.resolve_app(app)
        version = self.rag_app(ref)
        spec = version.spec if version else None
        colls = ([self._collection(c["name"]) for c in spec["collections"]] if spec
                 else [self._collection(ref.ref)])
        pname, pversion = self.prompts.resolve(prompt or (spec["prompt"] if spec
                                                          else "rag-answer"))
        gen = self.generator(model or (spec["model"]["name"] if spec else None))
        return self._versions(colls, f"{pname}@{pversion}", gen, version)

    def _versions(self, colls: Sequence[StoredCollection], prompt_ref: str, gen: Generator,
                  app: AppVersion | None) -> dict[str, Any]:
        """The lineage of an answer: app version, each collection's newest version with its
        embedder and chunking, prompt version, model and its weights, software version."""
        current = []
        for coll in colls:
            # The newest version only: collections() would count every chunk.
            history = self.store.versions(coll)
            current.append(f"{coll.name}@{history[-1]['id'] if history else ''}")
        identity = self.model_identity(gen)
        reranker = app.spec["retrieval"].get("reranker_identity") if app else None
        return {**({"reranker": reranker} if reranker else {}),
                "app": app.ref if app else None, "collection": ",".join(current),
                "embedder": ",".join(sorted({c.embedder for c in colls})),
                "chunking": {c.name: dict(c.chunking) for c in colls},
                "prompt": prompt_ref, "model": gen.name, "backend": gen.backend,
                "model_identity": identity, "adapter": None,
                "software": f"alicerce {__version__}"}

    def _traced(self, stream: Stream, app: str, caller: str, rec: Recorder,
                version: AppVersion | None) -> Stream:
        """Store each request as a trace (errors too); the Answer carries its id."""
        question = ""
        try:
            for item in stream:
                if isinstance(item, Answer):
                    question = item.question
                    if self.on_answer is not None:
                        self.on_answer(app, version.version if version else None, item)
                    item = replace(item, trace_id=self.traces.record(
                        app, caller, item.question, answer=item, spans=rec.spans,
                        lineage=item.versions, app_version=version.version if version else None,
                        latency_ms=rec.elapsed_ms()))
                yield item
        except AlicerceError as exc:
            self.traces.record(app, caller, question, error=str(exc), spans=rec.spans,
                               app_version=version.version if version else None,
                               latency_ms=rec.elapsed_ms())
            raise


def _screened(guards: Guards, message: Message, lang: str) -> Message:
    """`message` as the input rails redact it (unchanged when they would block it)."""
    out = guards.input.run(message.content, Context(message.content, lang))
    return message if out.blocked else replace(message, content=out.text)
