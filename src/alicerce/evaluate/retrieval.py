"""Retrieval metrics: hit rate and MRR as the LLM Zoomcamp defines them, recall@k, nDCG@10.

Relevance is by document id: a query is answered by one or more documents, and a ranking is
the list of distinct document ids in the order their best chunk was retrieved.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alicerce.errors import InputError, NotFoundError
from alicerce.store.base import Filters


@dataclass(frozen=True)
class EvalQuery:
    question: str
    relevant: frozenset[str]
    filters: Filters = field(default_factory=dict)


@dataclass(frozen=True)
class QueryResult:
    question: str
    relevant: frozenset[str]
    ranking: tuple[str, ...]


@dataclass
class RetrievalReport:
    k: int
    metrics: dict[str, float]
    results: list[QueryResult]
    seconds: float = 0.0

    @property
    def queries(self) -> int:
        return len(self.results)


def hit(relevant: frozenset[str], ranking: Sequence[str], k: int) -> float:
    return 1.0 if any(d in relevant for d in ranking[:k]) else 0.0


def reciprocal_rank(relevant: frozenset[str], ranking: Sequence[str], k: int) -> float:
    for i, d in enumerate(ranking[:k]):
        if d in relevant:
            return 1.0 / (i + 1)
    return 0.0


def recall(relevant: frozenset[str], ranking: Sequence[str], k: int) -> float:
    return len(relevant.intersection(ranking[:k])) / len(relevant) if relevant else 0.0


def ndcg(relevant: frozenset[str], ranking: Sequence[str], k: int = 10) -> float:
    dcg = sum(1.0 / math.log2(i + 2) for i, d in enumerate(ranking[:k]) if d in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    return dcg / ideal if ideal else 0.0


def score(results: Sequence[QueryResult], k: int) -> dict[str, float]:
    n = len(results) or 1
    return {
        "hit_rate": sum(hit(r.relevant, r.ranking, k) for r in results) / n,
        "mrr": sum(reciprocal_rank(r.relevant, r.ranking, k) for r in results) / n,
        f"recall@{k}": sum(recall(r.relevant, r.ranking, k) for r in results) / n,
        "ndcg@10": sum(ndcg(r.relevant, r.ranking, 10) for r in results) / n,
    }


def evaluate(queries: Sequence[EvalQuery], rank: Callable[[EvalQuery], list[str]],
             k: int) -> list[QueryResult]:
    return [QueryResult(q.question, q.relevant, tuple(rank(q))) for q in queries]


def load_dataset(path: Path, question_field: str = "question", id_field: str = "document",
                 filter_fields: Sequence[str] = ()) -> list[EvalQuery]:
    """Questions with the ids of the documents that answer them, from CSV or JSONL.

    Several relevant ids go in a JSON list, or in CSV separated by `|`.
    """
    if not path.is_file():
        raise NotFoundError(f"dataset {path} not found", hint="give the path of a CSV or JSONL")
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()]
    elif path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    else:
        raise InputError(f"dataset {path.name}: unsupported format", hint="use .csv or .jsonl")
    out: list[EvalQuery] = []
    for i, row in enumerate(rows):
        missing = [f for f in (question_field, id_field, *filter_fields) if row.get(f) in
                   (None, "")]
        if missing:
            raise InputError(f"dataset {path.name} row {i + 1}: missing {', '.join(missing)}",
                             hint=f"columns present: {', '.join(row)}; see --question-field, "
                                  "--id-field, --filter-field")
        ids = row[id_field]
        relevant = ([str(x) for x in ids] if isinstance(ids, list)
                    else [s.strip() for s in str(ids).split("|") if s.strip()])
        filters: Filters = {f: str(row[f]) for f in filter_fields}
        out.append(EvalQuery(str(row[question_field]), frozenset(relevant), filters))
    if not out:
        raise InputError(f"dataset {path.name} has no rows", hint="add questions")
    return out
