from pathlib import Path

import pytest

from alicerce import Alicerce
from alicerce.errors import InputError, NotFoundError
from alicerce.retrieve.rerank import FusionReranker
from alicerce.types import Hit


def hit(i: int, **scores: float) -> Hit:
    return Hit(i, f"d{i}", 0.0, "", "", "", None, "", {}, scores)


def test_rrf_sums_reciprocal_ranks() -> None:
    hits = [hit(1, sparse_rank=1, dense_rank=10), hit(2, dense_rank=1),
            hit(3, sparse_rank=2, dense_rank=2)]
    out = FusionReranker("rrf", rrf_k=60).rerank("q", hits, 3)
    assert [h.chunk_id for h in out] == [3, 1, 2]
    assert out[0].score == pytest.approx(2 / 62)


def test_weighted_fusion_normalises_and_weighs() -> None:
    hits = [hit(1, sparse=10.0, dense=0.2), hit(2, sparse=5.0, dense=0.9), hit(3, sparse=0.0)]
    assert [h.chunk_id for h in FusionReranker("weighted", 0.0).rerank("q", hits, 3)] == [1, 2, 3]
    assert [h.chunk_id for h in FusionReranker("weighted", 1.0).rerank("q", hits, 2)] == [2, 1]
    mid = FusionReranker("weighted", 0.5).rerank("q", hits, 3)
    assert [h.chunk_id for h in mid] == [2, 1, 3]
    assert [h.score for h in mid] == pytest.approx([0.75, 0.5, 0.0])


@pytest.mark.parametrize("mode", ["sparse", "dense", "hybrid", "rrf"])
def test_every_mode_finds_the_document(alc: Alicerce, docs: Path, mode: str) -> None:
    alc.ingest([docs], "kb")
    hits = alc.search("guest code reception", "kb", mode=mode, k=2)  # type: ignore[arg-type]
    assert hits[0].doc_key == "q1"
    assert hits[0].score >= hits[-1].score


def test_filters_restrict_results(alc: Alicerce, docs: Path) -> None:
    alc.ingest([docs], "kb")
    hits = alc.search("guest code", "kb", k=5, filters={"area": "rh"})
    assert [h.doc_key for h in hits] == ["q2"]


def test_hybrid_carries_both_scores(alc: Alicerce, docs: Path) -> None:
    alc.ingest([docs], "kb")
    top = alc.search("refund receipts", "kb", k=1)[0]
    assert {"sparse", "dense"} <= set(top.scores)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"alpha": 1.5}, "alpha"), ({"k": 0}, "k must be"), ({"mode": "fuzzy"}, "unknown search"),
     ({"filters": {"bad key": "x"}}, "invalid filter")],
)
def test_bad_search_arguments(alc: Alicerce, docs: Path, kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    alc.ingest([docs], "kb")
    with pytest.raises(InputError, match=message):
        alc.search("refund", "kb", **kwargs)


def test_empty_query_and_unknown_collection(alc: Alicerce, docs: Path) -> None:
    alc.ingest([docs], "kb")
    with pytest.raises(InputError, match="empty"):
        alc.search("   ", "kb")
    with pytest.raises(NotFoundError, match="existing: kb"):
        alc.search("x", "nope")


def test_query_of_only_punctuation_returns_dense_results(alc: Alicerce, docs: Path) -> None:
    alc.ingest([docs], "kb")
    assert alc.search("?!", "kb", mode="sparse") == []
    assert alc.search("?!", "kb", mode="hybrid")
