"""Answering: grounded answers, chat turns and OpenAI-style messages through the RAG
chain, each traced with its lineage."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from alicerce.apps.registry import AppVersion
from alicerce.apps.spec import FusionSpec
from alicerce.chains.plan import Plan, compile_chain
from alicerce.chains.rag_plan import RagConfig, rag_chain
from alicerce.chains.runner import ChainResult
from alicerce.chains.state import Turn
from alicerce.core.apps import AppRef, Apps
from alicerce.errors import AlicerceError, InputError
from alicerce.generate import Generator
from alicerce.generate.params import DecodingParams
from alicerce.guard.base import REFUSE
from alicerce.language import detect
from alicerce.observe.spans import Recorder
from alicerce.prompts.builtin import ABSTAIN
from alicerce.store.base import Filters, StoredCollection
from alicerce.types import Answer, Hit, Message
from alicerce.version import __version__

Stream = Iterator["str | Answer"]
_OPTIONS = {"model", "params", "k", "mode", "filters", "step_back", "extractiveness",
            "prompt", "guards", "extra_collections", "fusion", "adapter"}


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
        lang = options.pop("language", None) or detect(message)
        return self._rag(message, app, stream=stream, history=history, language=lang,
                         **options)

    def _rag(self, question: str, app: str | AppRef, *, stream: bool,
             caller: str = "local", history: Sequence[Message] | None = None,
             language: str | None = None, **options: Any) -> Stream:
        """The app's plan (its version's own, or one with the request's options) run by
        the chain runner, its result turned into an Answer."""
        rec = Recorder()
        ref = self.resolve_app(app)
        version = self.rag_app(ref)
        try:
            self._check_text(question)
            plan, key, config = self._rag_plan(ref, version, options)
            decoding = DecodingParams.build(**config.decoding)
            if decoding.n > 1:
                raise InputError("an answer is one candidate (n=1)",
                                 hint="use `alicerce generate --n N` for several candidates")
            template = self.prompts.get(config.prompt)
            gen = self.generator(config.model, config.adapter)
            colls = [self._collection(c) for c in config.collections]
            versions = self._versions(colls, template.ref, gen, version, config.adapter)
            turn = Turn(question, language or "", stream, chat=history is not None)
        except AlicerceError as exc:
            self.traces.record(ref.name, caller, question, error=str(exc), spans=rec.spans,
                               app_version=version.version if version else None,
                               latency_ms=rec.elapsed_ms())
            raise
        inputs = {"question": question, "history": list(history or [])}
        run = self.chains.runner.stream(plan, inputs, rec, key, turn)
        return self._traced(_answers(run, turn, {**versions, "decoding": decoding.as_dict()}),
                            ref.name, caller, rec, version)

    def _rag_plan(self, ref: AppRef, version: AppVersion | None,
                  options: dict[str, Any]) -> tuple[Plan, str, RagConfig]:
        """(plan, its cache key, config): the version's shared plan when the request
        changes nothing, else one compiled for this request (key "")."""
        config = RagConfig.of(version.spec if version else None,
                              self._collection(ref.ref).name if version is None else "",
                              self.settings)
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise TypeError(f"unknown answer option(s): {', '.join(unknown)}")
        if all(v is None or (k, v) in (("guards", True), ("extra_collections", ()))
               for k, v in options.items()):
            return self.chains.rag_plan(version, config), \
                version.hash if version else f"collection:{config.collections[0]}", config
        params = options.get("params")
        decoding = (params.as_dict() if isinstance(params, DecodingParams) else
                    self._decoding(params, version).as_dict()) if params is not None else None
        adapter = options.get("adapter")
        if adapter:  # in-process callers only: HTTP requests cannot pass it
            adapter = self.pin_adapter(adapter, options.get("model") or config.model,
                                       "admin")[0]
        config = config.with_options(
            model=options.get("model"), adapter=adapter, decoding=decoding, k=options.get("k"),
            mode=options.get("mode"), filters=options.get("filters"),
            step_back=options.get("step_back"), extractiveness=options.get("extractiveness"),
            prompt=options.get("prompt"), guards=options.get("guards", True),
            fusion=_fusion(options.get("fusion")),
            extra_collections=options.get("extra_collections", ()))
        return compile_chain(rag_chain(config)), "", config

    def retrieve(self, question: str, app: str | AppRef, *, k: int | None = None,
                 filters: Filters | None = None) -> list[Hit]:
        """What `app` retrieves for `question` (its plan's retrieve and rerank steps, with
        its collections, mode, alpha and filters), without generating: retrieval
        evaluation scores this."""
        ref = self.resolve_app(app)
        plan, _, _ = self._rag_plan(ref, self.rag_app(ref), {"k": k, "filters": filters})
        return self.chains.runner.passages(plan, question, Recorder())

    def answer_versions(self, app: str | AppRef, model: str | None = None,
                        prompt: str | None = None, adapter: str | None = None
                        ) -> dict[str, str]:
        """What an answer from `app` would depend on now (the cache's key)."""
        ref = self.resolve_app(app)
        version = self.rag_app(ref)
        spec = version.spec if version else None
        colls = ([self._collection(c["name"]) for c in spec["collections"]] if spec
                 else [self._collection(ref.ref)])
        pname, pversion = self.prompts.resolve(prompt or (spec["prompt"] if spec
                                                          else "rag-answer"))
        own = spec["model"] if spec else {}
        if adapter:
            adapter = self.pin_adapter(adapter, model or own.get("name")
                                       or self.settings.generator, "admin")[0]
        elif model in (None, own.get("name")):
            adapter = own.get("adapter")
        gen = self.generator(model or own.get("name"), adapter)
        return self._versions(colls, f"{pname}@{pversion}", gen, version, adapter)

    def _versions(self, colls: Sequence[StoredCollection], prompt_ref: str, gen: Generator,
                  app: AppVersion | None, adapter: str | None = None) -> dict[str, Any]:
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
                "model_identity": identity, "adapter": adapter,
                **({"adapter_identity": self._adapter_identity(adapter, app)}
                   if adapter else {}),
                "software": f"alicerce {__version__}"}

    def _adapter_identity(self, adapter: str, app: AppVersion | None) -> str:
        """The app's own adapter's hash is in its resolved spec (no query per answer)."""
        own = app.spec["model"] if app else {}
        if own.get("adapter") == adapter and own.get("adapter_identity"):
            return str(own["adapter_identity"])
        return f"sha256:{self.adapters.get(adapter, 'admin').hash}"

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


def _fusion(value: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """A request's fusion option ("sequence", or {mode, documents}) checked."""
    if value is None:
        return None
    try:
        spec = FusionSpec.model_validate({"mode": value} if isinstance(value, str) else value)
    except ValidationError as exc:
        raise InputError(f"fusion: {exc.errors()[0]['msg']}",
                         hint="prompt, sequence or token (documents: 1-8)") from None
    return spec.model_dump()


def _answers(run: Iterator[str | ChainResult], turn: Turn,
             versions: dict[str, Any]) -> Stream:
    """A RAG plan's run as the text it streams, then its Answer."""
    for item in run:
        if isinstance(item, str):
            yield item
            continue
        standalone = (turn.query or turn.question) if turn.chat else ""
        stop = item.stop
        if stop is not None:
            language = turn.language or detect(turn.question)
            turn.timings["total_ms"] = turn.ms()
            yield Answer(turn.question, (ABSTAIN if stop.replace == "abstain" else REFUSE)
                         [language], (), turn.sources, True, language, item.usage,
                         turn.timings, versions, standalone_question=standalone,
                         guards=item.verdicts, blocked=f"{stop.stage}:{stop.rail}",
                         redactions=dict(item.redactions or {}))
            return
        yield Answer(turn.question, item.outputs["answer"], turn.citations, turn.sources,
                     turn.abstained, turn.language, item.usage, turn.timings, versions,
                     standalone_question=standalone, logprobs=turn.logprobs,
                     guards=item.verdicts, redactions=dict(item.redactions or {}))
