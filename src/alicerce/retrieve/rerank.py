"""The Reranker seam, and the fusion reranker that merges sparse and dense candidates.

Hybrid search is "retrieve candidates from each retriever, then rerank": fusion is the
first reranker; cross-encoder and LLM rerankers plug into the same protocol later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Literal, Protocol

from alicerce.errors import InputError
from alicerce.types import Hit

FusionMethod = Literal["weighted", "rrf"]


class Reranker(Protocol):
    name: str

    def rerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
        """Reorder `hits` (best first) and keep `k`; scores are the reranker's own."""
        ...


def _minmax(values: dict[int, float]) -> dict[int, float]:
    if not values:
        return {}
    lo, hi = min(values.values()), max(values.values())
    span = hi - lo
    return {i: ((v - lo) / span if span > 0 else 1.0) for i, v in values.items()}


class FusionReranker:
    """Combines per-retriever scores carried in `Hit.scores`.

    `weighted`: alpha * minmax(dense) + (1 - alpha) * minmax(sparse); a candidate missing
    from one list scores 0 there. `rrf`: sum over retrievers of 1 / (rrf_k + rank).
    """

    def __init__(self, method: FusionMethod = "weighted", alpha: float = 0.5,
                 rrf_k: int = 60) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise InputError(f"alpha must be between 0 and 1, got {alpha}",
                             hint="0 = keywords only, 1 = embeddings only, 0.5 = both equally")
        if method not in ("weighted", "rrf"):
            raise InputError(f"unknown fusion method {method!r}", hint="use weighted or rrf")
        self.method, self.alpha, self.rrf_k = method, alpha, rrf_k
        self.name = f"fusion-{method}"

    def rerank(self, query: str, hits: Sequence[Hit], k: int) -> list[Hit]:
        if self.method == "rrf":
            fused = {h.chunk_id: sum(1.0 / (self.rrf_k + h.scores[name])
                                     for name in ("sparse_rank", "dense_rank") if name in h.scores)
                     for h in hits}
        else:
            dense = _minmax({h.chunk_id: h.scores["dense"] for h in hits if "dense" in h.scores})
            sparse = _minmax({h.chunk_id: h.scores["sparse"] for h in hits if "sparse" in h.scores})
            fused = {h.chunk_id: self.alpha * dense.get(h.chunk_id, 0.0)
                     + (1 - self.alpha) * sparse.get(h.chunk_id, 0.0) for h in hits}
        ranked = sorted(hits, key=lambda h: (-fused[h.chunk_id], h.chunk_id))[:k]
        return [replace(h, score=fused[h.chunk_id]) for h in ranked]
