import json
from pathlib import Path

import pytest

from alicerce import Alicerce
from alicerce.errors import InputError, NotFoundError
from alicerce.evaluate.retrieval import (
    EvalQuery,
    QueryResult,
    hit,
    load_dataset,
    ndcg,
    recall,
    reciprocal_rank,
    score,
)

R = frozenset({"a"})


def test_zoomcamp_definitions() -> None:
    # As in the course notebook: per query, the first relevant rank r gives 1/r; else 0.
    assert hit(R, ["x", "a"], 5) == 1.0 and hit(R, ["x"] * 5 + ["a"], 5) == 0.0
    assert reciprocal_rank(R, ["x", "y", "a"], 5) == pytest.approx(1 / 3)
    assert reciprocal_rank(R, ["x"] * 5 + ["a"], 5) == 0.0
    results = [QueryResult("q1", R, ("a",)), QueryResult("q2", R, ("x", "a")),
               QueryResult("q3", R, ("x",))]
    m = score(results, 5)
    assert m["hit_rate"] == pytest.approx(2 / 3) and m["mrr"] == pytest.approx(0.5)


def test_recall_and_ndcg_with_several_relevant() -> None:
    rel = frozenset({"a", "b"})
    assert recall(rel, ["a", "x", "y"], 3) == 0.5
    assert ndcg(rel, ["a", "b"], 10) == pytest.approx(1.0)
    assert ndcg(rel, ["x", "a"], 10) == pytest.approx((1 / 1.5849625) / (1 + 1 / 1.5849625))


def test_load_csv_and_jsonl(tmp_path: Path) -> None:
    csv = tmp_path / "q.csv"
    csv.write_text("question,course,document\nHow?,ml,d1|d2\n")
    [q] = load_dataset(csv, filter_fields=["course"])
    assert q == EvalQuery("How?", frozenset({"d1", "d2"}), {"course": "ml"})
    jl = tmp_path / "q.jsonl"
    jl.write_text(json.dumps({"question": "Why?", "document": ["d3"]}) + "\n")
    assert load_dataset(jl)[0].relevant == frozenset({"d3"})


def test_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_dataset(tmp_path / "none.csv")
    bad = tmp_path / "q.csv"
    bad.write_text("query,doc\nx,y\n")
    with pytest.raises(InputError, match="missing question, document") as err:
        load_dataset(bad)
    assert "query, doc" in err.value.hint


def test_evaluate_through_the_api(alc: Alicerce, docs: Path) -> None:
    alc.ingest([docs], "kb")
    queries = [EvalQuery("guest code for wifi", frozenset({"q1"})),
               EvalQuery("horário de almoço", frozenset({"q2"}), {"area": "rh"})]
    rep = alc.evaluate_retrieval("kb", queries, k=5)
    assert rep.queries == 2 and rep.metrics["hit_rate"] == 1.0
    assert set(rep.metrics) == {"hit_rate", "mrr", "recall@5", "ndcg@10"}
    assert all(len(set(r.ranking)) == len(r.ranking) for r in rep.results)
