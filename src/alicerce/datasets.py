"""Evaluation datasets: rows of question, expected source ids, reference answer and tags,
versioned by content hash, read from JSONL/CSV or from the public sets' own formats.

A bad row never stops a load: it is kept out with its line number and the reason, and the
dataset says how many rows it dropped, so a run scores what it can and reports the rest.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alicerce.errors import InputError, NotFoundError

# Column names accepted for each field, first match wins (our export, Zoomcamp, common usage).
QUESTION = ("question", "query", "pergunta", "question_pt_origin")
SOURCES = ("sources", "expected_sources", "source_ids", "relevant", "documents", "document",
           "doc_id", "doc_key")
REFERENCE = ("reference", "reference_answer", "expected_answer", "answer_orig", "resposta",
             "answer_pt_origin")


@dataclass(frozen=True)
class Row:
    """One golden question. `sources` are document ids (a collection's `doc_key`s)."""

    id: str
    question: str
    sources: tuple[str, ...] = ()
    reference: str = ""
    tags: tuple[str, ...] = ()
    filters: dict[str, str] = field(default_factory=dict, hash=False)
    origin: dict[str, Any] = field(default_factory=dict, hash=False)
    # A chain app's row: its inputs, and the outputs expected (docs/chains.md).
    inputs: dict[str, Any] = field(default_factory=dict, hash=False)
    expected: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Problem:
    """A row left out of the dataset, and why."""

    line: int
    reason: str


@dataclass(frozen=True)
class Dataset:
    name: str
    version: str
    rows: tuple[Row, ...]
    problems: tuple[Problem, ...] = ()
    source: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def build(name: str, rows: Sequence[Row], problems: Sequence[Problem] = (),
          source: str = "") -> Dataset:
    """A dataset whose version is the hash of its rows' content (not of the file's bytes, so
    CSV and JSONL of the same rows are the same version)."""
    if not rows:
        detail = "; ".join(f"line {p.line}: {p.reason}" for p in problems[:3])
        raise InputError(f"dataset {name} has no usable rows" + (f" ({detail})" if detail
                                                                 else ""),
                         hint="each row needs at least a question; see docs/evaluation.md")
    canon = json.dumps([[r.id, r.question, r.sources, r.reference, r.tags, r.filters]
                        + ([r.inputs, r.expected] if r.inputs else []) for r in rows],
                       ensure_ascii=False, sort_keys=True)
    version = hashlib.sha256(canon.encode()).hexdigest()[:12]
    return Dataset(name, version, tuple(rows), tuple(problems), source)


def load(path: str | Path, *, filter_fields: Sequence[str] = (), limit: int | None = None,
         sample_seed: int | None = None) -> Dataset:
    """Any dataset by path: JSONL/CSV in our format (or with the column names listed above),
    a SQuAD-format JSON (FaQuAD), a Pirá CSV, or a BEIR folder (SciFact)."""
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"dataset {p} not found", hint="give the path of a .jsonl, .csv, "
                            "SQuAD .json or BEIR folder")
    if p.is_dir():
        ds = _beir(p)
    elif p.suffix.lower() == ".json":
        ds = _squad(p)
    elif p.suffix.lower() == ".csv" and "question_pt_origin" in _header(p):
        ds = _pira(p)
    elif p.suffix.lower() in (".jsonl", ".ndjson", ".csv"):
        ds = _tabular(p, filter_fields)
    else:
        raise InputError(f"dataset {p.name}: unsupported format",
                         hint="use .jsonl, .csv, a SQuAD .json or a BEIR folder")
    return sample(ds, limit, sample_seed)


def sample(ds: Dataset, limit: int | None, seed: int | None = None) -> Dataset:
    """The first `limit` rows, or `limit` rows drawn with `seed` (a new content version)."""
    if limit is not None and limit < len(ds.rows):
        rows = list(ds.rows)
        if seed is not None:
            rows = random.Random(seed).sample(rows, limit)
        ds = build(ds.name, rows[:limit], ds.problems, ds.source)
    return ds


def _header(p: Path) -> list[str]:
    with p.open(encoding="utf-8", newline="") as fh:
        return next(csv.reader(fh), [])


def _records(p: Path) -> Iterable[tuple[int, dict[str, Any] | None, str]]:
    if p.suffix.lower() == ".csv":
        with p.open(encoding="utf-8", newline="") as fh:
            for i, rec in enumerate(csv.DictReader(fh), start=2):
                yield i, rec, ""
        return
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            yield i, None, f"not JSON ({exc.msg})"
            continue
        yield (i, rec, "") if isinstance(rec, dict) else (i, None, "not a JSON object")


def _pick(rec: dict[str, Any], names: Sequence[str]) -> Any:
    return next((rec[n] for n in names if rec.get(n) not in (None, "")), None)


def _ids(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):  # ["id", ...] or our feedback export's [{"doc_key": ...}]
        return tuple(str(v["doc_key"] if isinstance(v, dict) else v) for v in value)
    text = str(value).strip()
    if text.startswith("["):
        try:
            return _ids(json.loads(text))
        except json.JSONDecodeError:
            pass
    return tuple(s.strip() for s in text.split("|") if s.strip())


def _tabular(p: Path, filter_fields: Sequence[str]) -> Dataset:
    rows: list[Row] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for line, rec, error in _records(p):
        if rec is None:
            problems.append(Problem(line, error))
            continue
        if isinstance(rec.get("inputs"), dict):
            rows.append(_chain_row(rec, seen))
            continue
        question = _pick(rec, QUESTION)
        if not isinstance(question, str) or not question.strip():
            problems.append(Problem(line, "no question (columns: " + ", ".join(rec) + ")"))
            continue
        missing = [f for f in filter_fields if rec.get(f) in (None, "")]
        if missing:
            problems.append(Problem(line, f"missing filter field(s) {', '.join(missing)}"))
            continue
        raw_origin = rec.get("origin")
        origin: dict[str, Any] = raw_origin if isinstance(raw_origin, dict) else {}
        sources = _ids(_pick(rec, SOURCES))
        if origin.get("feedback", {}).get("score", 1) < 0:
            sources = ()  # what a down-rated answer cited is not what should be found
        tags = rec.get("tags") or ()
        rid = str(rec.get("id") or hashlib.sha1(question.strip().encode()).hexdigest()[:10])
        seen[rid] = seen.get(rid, 0) + 1
        if seen[rid] > 1:
            rid = f"{rid}-{seen[rid]}"
        rows.append(Row(rid, question.strip(), sources, str(_pick(rec, REFERENCE) or ""),
                        tuple(tags.split("|") if isinstance(tags, str) else map(str, tags)),
                        {f: str(rec[f]) for f in filter_fields}, origin))
    return build(p.stem, rows, problems, str(p))


def _chain_row(rec: dict[str, Any], seen: dict[str, int]) -> Row:
    """`{"id", "inputs": {...}, "expected": {...}}`: a row for a chain app."""
    inputs = rec["inputs"]
    shown = json.dumps(inputs, ensure_ascii=False, sort_keys=True)
    rid = str(rec.get("id") or hashlib.sha1(shown.encode()).hexdigest()[:10])
    seen[rid] = seen.get(rid, 0) + 1
    if seen[rid] > 1:
        rid = f"{rid}-{seen[rid]}"
    expected = rec.get("expected")
    tags = rec.get("tags") or ()
    return Row(rid, shown[:500], tags=tuple(tags.split("|") if isinstance(tags, str)
                                            else map(str, tags)),
               inputs=inputs, expected=expected if isinstance(expected, dict) else {})


def _squad(p: Path) -> Dataset:
    """SQuAD format (FaQuAD): the source of a question is its paragraph, `TITLE-N`, as
    written by `corpus()`."""
    try:
        data = json.loads(p.read_text(encoding="utf-8"))["data"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError(f"{p.name} is not a SQuAD-format JSON (no top-level 'data' list)",
                         hint="JSON datasets must be SQuAD format; use .jsonl for our own"
                         ) from None
    rows = [Row(str(qa["id"]), qa["question"].strip(), (f"{art['title']}-{i}",),
                qa["answers"][0]["text"] if qa.get("answers") else "",
                origin={"answers": [a["text"] for a in qa.get("answers", [])]})
            for art in data for i, para in enumerate(art["paragraphs"]) for qa in para["qas"]]
    return build(p.stem, rows, source=str(p))


def _pira(p: Path) -> Dataset:
    """Pirá 2.0: Portuguese question, two human answers, answerable flag (tag
    `unanswerable`); the source is the abstract, `pira-N` in `corpus()` order."""
    rows, docs = [], _pira_docs(p)
    with p.open(encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            if not r.get("question_pt_origin") or not r.get("at_labels"):
                continue
            answerable = float(r["at_labels"]) == 1.0
            rows.append(Row(r["id_qa"], r["question_pt_origin"].strip(),
                            (docs[r["abstract_translated_pt"].strip()],),
                            r["answer_pt_origin"] if answerable else "",
                            () if answerable else ("unanswerable",),
                            origin={"answers": [a for a in (r["answer_pt_origin"],
                                                            r["answer_pt_validate"]) if a]}))
    return build(p.stem, rows, source=str(p))


def _pira_docs(p: Path) -> dict[str, str]:
    docs: dict[str, str] = {}
    with p.open(encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            docs.setdefault(r["abstract_translated_pt"].strip(), f"pira-{len(docs)}")
    return docs


def _beir(p: Path, split: str = "test") -> Dataset:
    qrels = p / "qrels" / f"{split}.tsv"
    if not (p / "queries.jsonl").is_file() or not qrels.is_file():
        raise InputError(f"{p} is not a BEIR folder (queries.jsonl and qrels/{split}.tsv)",
                         hint="give a BEIR dataset folder, or a .jsonl/.csv file")
    relevant: dict[str, list[str]] = {}
    with qrels.open(encoding="utf-8") as fh:
        for rec in csv.DictReader(fh, delimiter="\t"):
            if int(rec["score"]) > 0:
                relevant.setdefault(rec["query-id"], []).append(rec["corpus-id"])
    rows = []
    for line in (p / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        if q["_id"] in relevant:
            rows.append(Row(q["_id"], q["text"], tuple(relevant[q["_id"]])))
    return build(p.name, rows, source=str(p))


def corpus(path: str | Path) -> list[dict[str, str]]:
    """The documents of a public set as JSONL records (`id`, `title`, `text`), with the ids
    its dataset rows expect; ingest them with `--id-field id --title-field title`."""
    p = Path(path)
    if p.is_dir():
        return [{"id": d["_id"], "title": d.get("title", ""), "text": d["text"]}
                for d in map(json.loads, (p / "corpus.jsonl").read_text(
                    encoding="utf-8").splitlines())]
    if p.suffix.lower() == ".json":
        data = json.loads(p.read_text(encoding="utf-8"))["data"]
        return [{"id": f"{art['title']}-{i}", "title": art["title"], "text": para["context"]}
                for art in data for i, para in enumerate(art["paragraphs"])]
    if p.suffix.lower() == ".csv" and "question_pt_origin" in _header(p):
        return [{"id": key, "title": "", "text": text} for text, key in _pira_docs(p).items()]
    raise InputError(f"{p.name}: no corpus to extract",
                     hint="corpora come with SQuAD .json, Pirá .csv and BEIR folders")


def write_jsonl(rows: Iterable[Row | dict[str, Any]], to: Path) -> int:
    """Write rows in our JSONL format; the file is replaced only once complete."""
    tmp = to.with_name(to.name + ".tmp")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for r in rows:
            rec = asdict(r) if isinstance(r, Row) else r
            fh.write(json.dumps({k: v for k, v in rec.items() if v not in ((), {}, "", None)},
                                ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(to)
    return n
