"""Search over one collection: sparse (BM25), dense (ANN), hybrid (weighted) or RRF."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from alicerce.config import SearchMode
from alicerce.embed.base import Embedder
from alicerce.errors import InputError
from alicerce.observe.spans import Recorder
from alicerce.retrieve.rerank import FusionMethod, FusionReranker, Reranker
from alicerce.store.base import BoostWeights, Filters, Store, StoredCollection
from alicerce.types import Hit

MODES: tuple[SearchMode, ...] = ("sparse", "dense", "hybrid", "rrf")
MAX_QUERY_CHARS = 4000


@dataclass(frozen=True)
class SearchParams:
    mode: SearchMode = "hybrid"
    k: int = 5
    alpha: float = 0.5
    rrf_k: int = 60
    candidates: int = 50
    boosts: BoostWeights = field(default_factory=BoostWeights)

    def check(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown search mode {self.mode!r}", hint="use " + ", ".join(MODES))
        if not 1 <= self.k <= 1000:
            raise InputError(f"k must be between 1 and 1000, got {self.k}", hint="e.g. -k 5")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"alpha must be between 0 and 1, got {self.alpha}",
                             hint="0 = keywords only, 1 = embeddings only")


class QueryEncoder:
    """Embeds queries with a small LRU cache: repeated questions skip the model."""

    def __init__(self, embedder: Embedder, size: int = 8192) -> None:
        self._embedder = embedder
        self.encode = lru_cache(maxsize=size)(self._encode)

    def _encode(self, text: str) -> NDArray[np.float32]:
        vec: NDArray[np.float32] = self._embedder.embed_queries([text])[0]
        vec.setflags(write=False)
        return vec


class Searcher:
    def __init__(self, store: Store, encoder: QueryEncoder) -> None:
        self._store, self._encoder = store, encoder

    def search(self, coll: StoredCollection, query: str, params: SearchParams,
               filters: Filters | None = None, reranker: Reranker | None = None,
               spans: Recorder | None = None) -> list[Hit]:
        """Best chunks; with `spans`, each retriever's candidates (chunk id, score) and the
        fusion's result are recorded, so a trace shows why a chunk was or was not used."""
        params.check()
        query = query.strip()
        if not query:
            raise InputError("the query is empty", hint="type a question or some keywords")
        if len(query) > MAX_QUERY_CHARS:
            raise InputError(f"the query has {len(query)} characters, over {MAX_QUERY_CHARS}",
                             hint="shorten it")
        rec = spans or Recorder()
        n = max(params.candidates, params.k) if params.mode in ("hybrid", "rrf") else params.k
        scores: dict[int, dict[str, float]] = {}
        where = {"collection": coll.name, "query": query, "filters": filters or {}}
        if params.mode != "dense":
            with rec.span("retrieve.sparse", **where, n=n) as out:
                found = self._store.sparse_search(coll, query, n, filters, params.boosts)
                out["candidates"] = [[cid, round(s, 4)] for cid, s in found]
            for rank, (cid, s) in enumerate(found, 1):
                scores.setdefault(cid, {}).update(sparse=s, sparse_rank=rank)
        if params.mode != "sparse":
            with rec.span("retrieve.dense", **where, n=n) as out:
                vec = self._encoder.encode(query)
                found = self._store.dense_search(coll, vec, n, filters)
                out["candidates"] = [[cid, round(s, 4)] for cid, s in found]
            for rank, (cid, s) in enumerate(found, 1):
                scores.setdefault(cid, {}).update(dense=s, dense_rank=rank)
        with rec.span("fusion", mode=params.mode, alpha=params.alpha, k=params.k) as out:
            rows = self._store.hits(list(scores))
            hits = [replace(rows[c], scores=s) for c, s in scores.items() if c in rows]
            if params.mode in ("sparse", "dense"):
                key = params.mode
                hits = sorted((replace(h, score=h.scores[key]) for h in hits),
                              key=lambda h: -h.score)[: params.k]
            else:
                method: FusionMethod = "rrf" if params.mode == "rrf" else "weighted"
                hits = FusionReranker(method, params.alpha, params.rrf_k).rerank(
                    query, hits, params.k)
            out["result"] = [[h.chunk_id, round(h.score, 4)] for h in hits]
        if reranker is not None:
            with rec.span("rerank", reranker=reranker.name) as out:
                hits = reranker.rerank(query, hits, params.k)
                out["result"] = [[h.chunk_id, round(h.score, 4)] for h in hits]
        return hits
