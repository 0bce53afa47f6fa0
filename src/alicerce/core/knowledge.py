"""The knowledge base: collections, ingestion, search, retrieval evaluation, embeddings."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from alicerce.config import EmbedderName, SearchMode
from alicerce.core.home import Home
from alicerce.embed import NEEDS, family, get_embedder
from alicerce.embed import available as available_embedders
from alicerce.embed.base import Embedder
from alicerce.errors import ConfigError, InputError, NotFoundError
from alicerce.evaluate.retrieval import EvalQuery, RetrievalReport, evaluate, score
from alicerce.ingest.chunking import ChunkingConfig
from alicerce.ingest.pipeline import Ingestor, Progress, max_bytes, parse_mapping
from alicerce.observe.spans import Recorder
from alicerce.retrieve.rerank import Reranker
from alicerce.retrieve.search import QueryEncoder, Searcher, SearchParams
from alicerce.store.base import BoostWeights, Filters, StoredCollection
from alicerce.types import CollectionInfo, Hit, IngestReport

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KnowledgeBase(Home):
    """Collections of documents: ingest, search, evaluate retrieval, embed."""

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

    def ingest(self, paths: Sequence[str | Path], collection: str, *, sync: bool = False,
               text_field: str | None = None, id_field: str | None = None,
               title_field: str | None = None,
               metadata_fields: str | Sequence[str] | None = None,
               chunk_tokens: int | None = None, chunk_overlap: int | None = None,
               embedder: EmbedderName | None = None, redact_pii: bool | None = None,
               progress: Progress | None = None) -> IngestReport:
        """Add or update files in `collection`; see docs/ingestion.md for the rules.

        `embedder`, `chunk_tokens`, `chunk_overlap` and `redact_pii` (store chunk texts
        with personal data replaced, docs/guardrails.md) apply when the collection is
        created (default: the settings, no redaction); an existing collection keeps its own.
        """
        check_collection_name(collection)
        if not paths:
            raise InputError("nothing to ingest", hint="give one or more files or folders")
        mapping = parse_mapping(text_field, id_field, title_field, metadata_fields)
        coll = self.store.collection(collection)
        if coll is None:
            model = get_embedder(embedder or self.settings.embedder, self.settings)
            cfg = replace(_chunking(chunk_tokens or self.settings.chunk_tokens,
                                    self.settings.chunk_overlap if chunk_overlap is None
                                    else chunk_overlap), redact_pii=bool(redact_pii))
            coll = self.store.create_collection(collection, model.name, model.dim,
                                                cfg.as_dict())
        else:
            model = self.embedder_for(coll)
            if embedder is not None and family(coll.embedder) != embedder:
                raise InputError(
                    f"collection {collection!r} is embedded with {coll.embedder}",
                    hint="leave out --embedder, or ingest into a new collection")
            cfg = ChunkingConfig(int(coll.chunking["tokens"]), int(coll.chunking["overlap"]),
                                 bool(coll.chunking.get("redact_pii", False)))
            if redact_pii is not None and redact_pii != cfg.redact_pii:
                raise InputError(
                    f"collection {collection!r} was created "
                    f"{'with' if cfg.redact_pii else 'without'} PII redaction; it is fixed "
                    "when a collection is created",
                    hint="leave out --redact-pii, or ingest into a new collection")
            asked = (chunk_tokens or cfg.tokens, cfg.overlap if chunk_overlap is None
                     else chunk_overlap)
            if asked != (cfg.tokens, cfg.overlap):
                raise InputError(
                    f"collection {collection!r} is chunked with {cfg.tokens} tokens and "
                    f"{cfg.overlap} overlap; chunking is fixed when a collection is created",
                    hint="leave out --chunk-tokens/--chunk-overlap, or ingest into a new "
                         "collection")
        if self.settings.executor:
            from alicerce.embed.ray_pool import on_cluster

            model = on_cluster(model, family(model.name), self.settings)
        ingestor = Ingestor(self.store, model, coll, cfg,
                            max_bytes(self.settings.max_file_mb), progress)
        report = ingestor.run([Path(p) for p in paths], mapping, sync)
        self.store.flush()
        return report

    def sentence_embedder(self) -> Embedder:
        """The embedder that picks the sentences an answer reads (chains/select.py): the
        configured one, whatever embedded the collections (it only compares the question
        with sentences)."""
        return get_embedder(self.settings.embedder, self.settings)

    def search(self, query: str, collection: str, *, mode: SearchMode | None = None,
               k: int | None = None, alpha: float | None = None,
               filters: Filters | None = None, reranker: Reranker | None = None,
               spans: Recorder | None = None) -> list[Hit]:
        """Best chunks for `query`; settings give the defaults for anything not passed;
        with `spans`, each retriever's candidates are recorded."""
        coll = self._collection(collection)
        return self._searcher(coll).search(coll, query, self._params(mode, k, alpha), filters,
                                           reranker, spans)

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
        report = RetrievalReport(k, score(results, k), results, time.perf_counter() - started)
        history = self.store.versions(coll)
        self.track(lambda ex: ex.log_run(
            f"alicerce/eval/{coll.name}", f"retrieval {coll.name}@{history[-1]['id']}",
            params={"collection": coll.name, "collection_version": history[-1]["id"],
                    "embedder": coll.embedder, "mode": params.mode, "alpha": params.alpha,
                    "k": k, "queries": report.queries},
            metrics=report.metrics,
            tags={"alicerce.kind": "eval.retrieval", "alicerce.collection": coll.name}))
        return report

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
        ready = available_embedders(self.settings)
        if model not in ready:
            shown = model.encode("unicode_escape").decode()[:80]
            why = f": it needs {NEEDS[model]}" if model in NEEDS else ""
            raise NotFoundError(f"embedding model {shown!r} is not available here{why}",
                                hint="use one of " + ", ".join(ready))
        if kind not in ("query", "passage"):
            raise InputError(f"unknown input type {kind!r}", hint="use query or passage")
        if not texts or any(not t.strip() for t in texts):
            raise InputError("nothing to embed, or an empty text",
                             hint="give one or more non-empty strings")


def _chunking(tokens: int, overlap: int) -> ChunkingConfig:
    if not 16 <= tokens <= 8192:
        raise InputError(f"chunk size {tokens} is out of range", hint="use 16 to 8192 tokens")
    if not 0 <= overlap < tokens:
        raise InputError(f"chunk overlap {overlap} must be at least 0 and below {tokens}",
                         hint="e.g. --chunk-tokens 200 --chunk-overlap 32")
    return ChunkingConfig(tokens, overlap)


def check_collection_name(name: str) -> None:
    """InputError unless `name` can name a collection (checked before any upload is kept)."""
    if not _NAME.match(name):
        shown = name.encode("unicode_escape").decode()[:80]
        raise InputError(f"invalid collection name {shown!r}",
                         hint="start with a letter or digit; then letters, digits, '.', '_' "
                              "or '-' (up to 64)")
