"""Alicerce: the one core API that the CLI (and later HTTP) layers call."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from alicerce.config import EmbedderName, SearchMode, Settings
from alicerce.embed import family, get_embedder
from alicerce.embed.base import Embedder
from alicerce.errors import ConfigError, InputError, NotFoundError
from alicerce.evaluate.retrieval import EvalQuery, RetrievalReport, evaluate, score
from alicerce.ingest.chunking import ChunkingConfig
from alicerce.ingest.pipeline import Ingestor, Progress, max_bytes, parse_mapping
from alicerce.retrieve.rerank import Reranker
from alicerce.retrieve.search import QueryEncoder, Searcher, SearchParams
from alicerce.store.base import BoostWeights, Filters, StoredCollection
from alicerce.store.sqlite import SQLiteStore
from alicerce.types import CollectionInfo, Hit, IngestReport

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


def _chunking(tokens: int, overlap: int) -> ChunkingConfig:
    if not 16 <= tokens <= 8192:
        raise InputError(f"chunk size {tokens} is out of range", hint="use 16 to 8192 tokens")
    if not 0 <= overlap < tokens:
        raise InputError(f"chunk overlap {overlap} must be at least 0 and below {tokens}",
                         hint="e.g. --chunk-tokens 200 --chunk-overlap 32")
    return ChunkingConfig(tokens, overlap)
