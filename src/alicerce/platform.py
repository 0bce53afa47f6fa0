"""Alicerce: the one core API that the CLI (and later HTTP) layers call."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from alicerce.access.keys import KeyStore
from alicerce.chains.chat import Conversations, condense, recent
from alicerce.chains.language import detect
from alicerce.chains.rag import RagChain, RagRequest, Stream
from alicerce.chains.techniques import Example, Generation, run
from alicerce.config import EmbedderName, Extractiveness, SearchMode, Settings
from alicerce.embed import EMBEDDING_MODELS, family, get_embedder
from alicerce.embed.base import Embedder
from alicerce.errors import ConfigError, InputError, NotFoundError
from alicerce.evaluate.retrieval import EvalQuery, RetrievalReport, evaluate, score
from alicerce.generate import Generator, get_generator
from alicerce.generate.models import ModelInfo, list_models
from alicerce.generate.params import DecodingParams
from alicerce.ingest.chunking import ChunkingConfig
from alicerce.ingest.pipeline import Ingestor, Progress, max_bytes, parse_mapping
from alicerce.observe.traces import Traces
from alicerce.prompts.builtin import BUILTINS
from alicerce.prompts.registry import PromptRegistry
from alicerce.retrieve.rerank import Reranker
from alicerce.retrieve.search import QueryEncoder, Searcher, SearchParams
from alicerce.store.base import BoostWeights, Filters, StoredCollection
from alicerce.store.sqlite import SQLiteStore
from alicerce.types import Answer, CollectionInfo, Hit, IngestReport, Message

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Nothing here may reach the network at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")


class Alicerce:
    """A home directory of collections: ingest documents, search them, evaluate retrieval."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = SQLiteStore(
            settings.home,
            hnsw={"connectivity": settings.hnsw_connectivity,
                  "expansion_add": settings.hnsw_expansion_add,
                  "expansion_search": settings.hnsw_expansion_search},
            exact_search_limit=settings.exact_search_limit)
        self._encoders: dict[str, QueryEncoder] = {}
        self._generators: dict[str, Generator] = {}  # use_generator's
        self._loaded: dict[str, Generator] = {}  # resolved names, so lookups cost nothing
        self.prompts = PromptRegistry(self.store.path, BUILTINS)
        self.conversations = Conversations(self.store.path)
        self.keys = KeyStore(self.store.path)
        self.traces = Traces(self.store.path)

    @classmethod
    def open(cls, home: str | Path | None = None, settings: Settings | None = None,
             **overrides: Any) -> Alicerce:
        """Open (creating if needed) the home in `settings`, or `home` with default settings."""
        if settings is None:
            settings = Settings.load(home=home, **overrides)
        elif home is not None or overrides:  # re-validate the combination
            settings = Settings.load(**{**settings.model_dump(), "home": home or settings.home,
                                        **overrides})
        return cls(settings)

    def __enter__(self) -> Alicerce:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.prompts.close()
        self.conversations.close()
        self.keys.close()
        self.traces.close()
        self.store.close()

    # -- collections ---------------------------------------------------------------------
    def collections(self) -> list[CollectionInfo]:
        return self.store.collections()

    def _collection(self, name: str) -> StoredCollection:
        coll = self.store.collection(name)
        if coll is None:
            known = ", ".join(c.name for c in self.store.collections()) or "none yet"
            raise NotFoundError(f"no collection named {name!r} in {self.settings.home}",
                                hint=f"ingest into it first; existing: {known}")
        return coll

    def embedder_for(self, coll: StoredCollection) -> Embedder:
        """The embedder a collection was built with (not the one configured for new ones)."""
        embedder = get_embedder(family(coll.embedder), self.settings)
        if embedder.name != coll.embedder:
            raise ConfigError(
                f"collection {coll.name!r} was embedded with {coll.embedder}, but the "
                f"installed backend is {embedder.name}",
                hint="install the matching version or re-ingest into a new collection")
        return embedder

    def versions(self, collection: str) -> list[dict[str, Any]]:
        return self.store.versions(self._collection(collection))

    # -- ingestion -----------------------------------------------------------------------
    def ingest(self, paths: Sequence[str | Path], collection: str, *, sync: bool = False,
               text_field: str | None = None, id_field: str | None = None,
               title_field: str | None = None,
               metadata_fields: str | Sequence[str] | None = None,
               chunk_tokens: int | None = None, chunk_overlap: int | None = None,
               embedder: EmbedderName | None = None,
               progress: Progress | None = None) -> IngestReport:
        """Add or update files in `collection`; see docs/ingestion.md for the rules.

        `embedder`, `chunk_tokens` and `chunk_overlap` apply when the collection is created
        (default: the settings); an existing collection keeps its own.
        """
        if not _NAME.match(collection):
            raise InputError(f"invalid collection name {collection!r}",
                             hint="use letters, digits, '.', '_' or '-' (up to 64)")
        if not paths:
            raise InputError("nothing to ingest", hint="give one or more files or folders")
        mapping = parse_mapping(text_field, id_field, title_field, metadata_fields)
        coll = self.store.collection(collection)
        if coll is None:
            model = get_embedder(embedder or self.settings.embedder, self.settings)
            cfg = _chunking(chunk_tokens or self.settings.chunk_tokens,
                            self.settings.chunk_overlap if chunk_overlap is None else chunk_overlap)
            coll = self.store.create_collection(collection, model.name, model.dim,
                                                cfg.as_dict())
        else:
            model = self.embedder_for(coll)
            if embedder is not None and family(coll.embedder) != embedder:
                raise InputError(
                    f"collection {collection!r} is embedded with {coll.embedder}",
                    hint="leave out --embedder, or ingest into a new collection")
            cfg = ChunkingConfig(int(coll.chunking["tokens"]), int(coll.chunking["overlap"]))
            asked = (chunk_tokens or cfg.tokens, cfg.overlap if chunk_overlap is None
                     else chunk_overlap)
            if asked != (cfg.tokens, cfg.overlap):
                raise InputError(
                    f"collection {collection!r} is chunked with {cfg.tokens} tokens and "
                    f"{cfg.overlap} overlap; chunking is fixed when a collection is created",
                    hint="leave out --chunk-tokens/--chunk-overlap, or ingest into a new "
                         "collection")
        ingestor = Ingestor(self.store, model, coll, cfg,
                            max_bytes(self.settings.max_file_mb), progress)
        report = ingestor.run([Path(p) for p in paths], mapping, sync)
        self.store.flush()
        return report

    # -- search --------------------------------------------------------------------------
    def search(self, query: str, collection: str, *, mode: SearchMode | None = None,
               k: int | None = None, alpha: float | None = None,
               filters: Filters | None = None, reranker: Reranker | None = None) -> list[Hit]:
        """Best chunks for `query`; settings give the defaults for anything not passed."""
        coll = self._collection(collection)
        return self._searcher(coll).search(coll, query, self._params(mode, k, alpha), filters,
                                           reranker)

    def _params(self, mode: SearchMode | None, k: int | None,
                alpha: float | None) -> SearchParams:
        s = self.settings
        return SearchParams(mode=mode or s.search_mode, k=s.search_k if k is None else k,
                            alpha=s.alpha if alpha is None else alpha, rrf_k=s.rrf_k,
                            candidates=s.candidates,
                            boosts=BoostWeights(s.boost_title, s.boost_section, s.boost_text))

    def _searcher(self, coll: StoredCollection) -> Searcher:
        if coll.embedder not in self._encoders:
            self._encoders[coll.embedder] = QueryEncoder(self.embedder_for(coll))
        return Searcher(self.store, self._encoders[coll.embedder])

    # -- evaluation ----------------------------------------------------------------------
    def evaluate_retrieval(self, collection: str, queries: Sequence[EvalQuery], *, k: int = 5,
                           mode: SearchMode | None = None,
                           alpha: float | None = None) -> RetrievalReport:
        """Hit rate, MRR, recall@k and nDCG@10 over `queries` (relevant = same document id)."""
        coll = self._collection(collection)
        searcher = self._searcher(coll)
        depth = max(k, 10)
        params = self._params(mode, depth * 3, alpha)

        def rank(q: EvalQuery) -> list[str]:
            hits = searcher.search(coll, q.question, params, q.filters or None)
            return list(dict.fromkeys(h.doc_key for h in hits))[:depth]

        started = time.perf_counter()
        results = evaluate(queries, rank, k)
        return RetrievalReport(k, score(results, k), results, time.perf_counter() - started)


    # -- generation ----------------------------------------------------------------------
    def generator(self, model: str | None = None) -> Generator:
        """A loaded model (once per process): bundled name, [models.NAME], or .gguf path."""
        name = model or self.settings.generator
        if name not in self._generators and name not in self._loaded:
            self._loaded[name] = get_generator(name, self.settings)
        return self._generators.get(name) or self._loaded[name]

    def use_generator(self, name: str, generator: Generator) -> None:
        """Serve `name` with an object of your own (a plugin backend, or a test double)."""
        self._generators[name] = generator

    def models(self) -> list[ModelInfo]:
        """Bundled and configured models, then those registered with `use_generator`."""
        return list_models(self.settings) + [
            ModelInfo(name, "custom", gen.name, True, None, gen.context_size, "", None,
                      "registered in this process") for name, gen in self._generators.items()]

    def decoding(self, params: DecodingParams | dict[str, Any] | None = None) -> DecodingParams:
        """Decoding parameters, with the settings' max_tokens and temperature as defaults."""
        if isinstance(params, DecodingParams):
            return params
        values = {"max_tokens": self.settings.max_tokens,
                  "temperature": self.settings.temperature, **(params or {})}
        return DecodingParams.build(**values)

    def generate(self, text: str, *, technique: str = "zero-shot", model: str | None = None,
                 params: DecodingParams | dict[str, Any] | None = None,
                 instructions: str = "", examples: Sequence[Example] = (),
                 k: int = 0) -> Generation:
        """Apply a prompting technique to `text` (docs/generation.md lists them)."""
        self._check_text(text)
        embedder = get_embedder(self.settings.embedder, self.settings) if k else None
        return run(technique, text, self.generator(model), self.prompts.get,
                   self.decoding(params), instructions=instructions, examples=examples, k=k,
                   embedder=embedder)

    def ask(self, question: str, collection: str, **options: Any) -> Answer:
        """A grounded answer with citations; options as for `ask_stream`."""
        answer: Answer | None = None
        for item in self._rag(question, collection, stream=False, **options):
            if isinstance(item, Answer):
                answer = item
        assert answer is not None
        return answer

    def ask_stream(self, question: str, collection: str, **options: Any) -> Stream:
        """Yields answer text as generated, then the finished Answer.

        Options: model, params (DecodingParams or dict), k, mode, filters, step_back,
        extractiveness, prompt (name[@version|label]), language, history, standalone.
        """
        return self._rag(question, collection, stream=True, **options)

    def chat(self, message: str, collection: str, conversation_id: str | None = None, *,
             stream: bool = False, **options: Any) -> tuple[str, Stream]:
        """One chat turn: (conversation id, stream of text then Answer); the turn is saved."""
        self._check_text(message)
        self.decoding(options.get("params"))  # bad input fails before any model call
        self._collection(collection)
        cid = self.conversations.resolve(collection, conversation_id)
        inner = self._follow_up(self.conversations.history(cid), message, collection, stream,
                                options)

        def turn() -> Stream:
            for item in inner:
                if isinstance(item, Answer):
                    self.conversations.append(cid, collection, item)
                yield item
        return cid, turn()

    def ask_messages(self, messages: Sequence[Message], collection: str, *,
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
        self._collection(collection)
        return self._follow_up(history, messages[-1].content, collection, stream, options)

    def _follow_up(self, history: Sequence[Message], message: str, collection: str,
                   stream: bool, options: dict[str, Any]) -> Stream:
        gen = self.generator(options.get("model"))
        lang = options.pop("language", None) or detect(message)
        kept = recent(history, self.settings.chat_history_tokens, gen.count_tokens)
        standalone, _ = condense(gen, self.prompts.get("condense-question"), kept, message,
                                 lang)
        return self._rag(message, collection, stream=stream, standalone=standalone,
                         language=lang, **options)

    def _rag(self, question: str, collection: str, *, stream: bool, model: str | None = None,
             params: DecodingParams | dict[str, Any] | None = None, k: int | None = None,
             mode: SearchMode | None = None, filters: Filters | None = None,
             step_back: bool = False, extractiveness: Extractiveness | None = None,
             prompt: str = "rag-answer", language: str | None = None,
             standalone: str = "", caller: str = "local") -> Stream:
        self._check_text(question)
        coll = self._collection(collection)
        template = self.prompts.get(prompt)
        decoding = self.decoding(params)
        if decoding.n > 1:
            raise InputError("an answer is one candidate (n=1)",
                             hint="use `alicerce generate --n N` for several candidates")
        gen = self.generator(model)
        searcher = self._searcher(coll)
        search = self._params(mode, k or self.settings.answer_k, None)
        chain = RagChain(lambda q: searcher.search(coll, q, search, filters), gen, template,
                         self.settings.answer_context_tokens, self.settings.abstain_below,
                         self.prompts.get("step-back") if step_back else None)
        versions = self._versions(coll, template.ref, gen)
        req = RagRequest(question, decoding, language or "",
                         extractiveness or self.settings.extractiveness, step_back,
                         standalone=standalone, versions=versions)
        return self._traced(chain.stream(req, stream=stream), collection, caller)

    def answer_versions(self, collection: str, model: str | None = None,
                        prompt: str = "rag-answer") -> dict[str, str]:
        """What an answer from `collection` would depend on now (the cache's key)."""
        name, version = self.prompts.resolve(prompt)
        return self._versions(self._collection(collection), f"{name}@{version}",
                              self.generator(model))

    def _versions(self, coll: StoredCollection, prompt_ref: str,
                  gen: Generator) -> dict[str, str]:
        # The newest version only: collections() would count every chunk of every collection.
        history = self.store.versions(coll)
        current = history[-1]["id"] if history else ""
        return {"collection": f"{coll.name}@{current}", "prompt": prompt_ref,
                "model": gen.name, "backend": gen.backend, "embedder": coll.embedder}

    def _traced(self, stream: Stream, app: str, caller: str) -> Stream:
        """Store each finished answer as a trace; the Answer carries its id."""
        for item in stream:
            if isinstance(item, Answer):
                item = replace(item, trace_id=self.traces.record(app, item, caller))
            yield item

    def embed(self, texts: Sequence[str], model: str | None = None,
              kind: str = "passage") -> list[list[float]]:
        """Vectors from an embedding backend (e5-small, minilm, remote); `kind` picks the
        query or passage form where the model has one (e5's prefixes)."""
        name = model or self.settings.embedder
        self.check_embed(texts, name, kind)
        embedder = get_embedder(name, self.settings)
        vectors = (embedder.embed_queries(texts) if kind == "query"
                   else embedder.embed_passages(texts))
        return [[float(x) for x in row] for row in vectors]

    def check_embed(self, texts: Sequence[str], model: str, kind: str) -> None:
        """The errors `embed` would raise, without embedding anything."""
        if model not in EMBEDDING_MODELS:
            raise NotFoundError(f"no embedding model {model!r}",
                                hint="use one of " + ", ".join(EMBEDDING_MODELS))
        if kind not in ("query", "passage"):
            raise InputError(f"unknown input type {kind!r}", hint="use query or passage")
        if not texts or any(not t.strip() for t in texts):
            raise InputError("nothing to embed, or an empty text",
                             hint="give one or more non-empty strings")

    def _check_text(self, text: str) -> None:
        if not text.strip():
            raise InputError("the question is empty", hint="type a question")
        if len(text) > self.settings.max_question_chars:
            raise InputError(f"the question has {len(text)} characters, over the limit of "
                             f"{self.settings.max_question_chars}",
                             hint="shorten it, or raise max_question_chars")


def _chunking(tokens: int, overlap: int) -> ChunkingConfig:
    if not 16 <= tokens <= 8192:
        raise InputError(f"chunk size {tokens} is out of range", hint="use 16 to 8192 tokens")
    if not 0 <= overlap < tokens:
        raise InputError(f"chunk overlap {overlap} must be at least 0 and below {tokens}",
                         hint="e.g. --chunk-tokens 200 --chunk-overlap 32")
    return ChunkingConfig(tokens, overlap)
