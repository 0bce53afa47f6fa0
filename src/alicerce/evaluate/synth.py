"""Synthetic evaluation data: questions generated from a collection's documents with their
source ids (as the LLM Zoomcamp built its ground truth), and paraphrases of existing
questions (augmentation). The generator writes JSON forced by a grammar, in the language of
each passage.

What comes out is filtered, each drop with its reason: duplicates (same words, or 80% of
them shared with a kept question), questions that copy a long verbatim span of the passage
(they leak the answer and make retrieval trivially lexical), questions with too little to do
with the passage (unanswerable from it), and, with `verify`, questions the judge says the
passage does not answer. Every row records the generator, its weights and the prompt.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from alicerce.datasets import Row
from alicerce.errors import AlicerceError, GeneratorError, NotFoundError
from alicerce.generate.params import DecodingParams
from alicerce.language import detect
from alicerce.metrics.grounding import STOP, fold
from alicerce.metrics.judges import Judge
from alicerce.prompts.judges import list_schema

if TYPE_CHECKING:
    from alicerce.platform import Alicerce

_WORD = re.compile(r"\w+", re.UNICODE)
LEAK_SPAN = 8  # consecutive words copied from the passage
MIN_OVERLAP = 0.25  # share of the question's content words found in the passage
NEAR_DUPLICATE = 0.8
PASSAGE_CHARS = 1500


@dataclass
class Synthesis:
    rows: list[Row]
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (question, reason)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (doc key, error)


def _words(text: str) -> list[str]:
    return _WORD.findall(fold(text))


def _content(text: str) -> set[str]:
    return {w for w in _words(text) if w not in STOP and len(w) > 2}


def leaks(question: str, passage: str, span: int = LEAK_SPAN) -> bool:
    """The question copies `span` consecutive words of the passage."""
    q, p = _words(question), " ".join(_words(passage))
    return any(" ".join(q[i:i + span]) in p for i in range(len(q) - span + 1))


class _Filter:
    """Keeps a question unless it duplicates a kept one, leaks, or is off the passage."""

    def __init__(self, seen: Sequence[str] = ()) -> None:
        self._kept: list[set[str]] = [_content(q) for q in seen]
        self._exact = {" ".join(_words(q)) for q in seen}

    def reason(self, question: str, passage: str | None) -> str:
        words = _content(question)
        if len(question) < 10 or not words:
            return "too short"
        if " ".join(_words(question)) in self._exact:
            return "duplicate"
        for kept in self._kept:
            if len(words & kept) / max(1, len(words | kept)) >= NEAR_DUPLICATE:
                return "near duplicate"
        if passage is not None:
            if leaks(question, passage):
                return f"copies {LEAK_SPAN}+ words of the passage (leaks the answer)"
            if len(words & _content(passage)) / len(words) < MIN_OVERLAP:
                return "too little to do with the passage (unanswerable from it)"
        return ""

    def keep(self, question: str) -> None:
        self._kept.append(_content(question))
        self._exact.add(" ".join(_words(question)))


def _ask(alc: Alicerce, model: str | None, prompt: str, count: int, seed: int,
         **values: object) -> list[str]:
    gen = alc.generator(model)
    params = DecodingParams(max_tokens=90 * count + 40, temperature=0.7, seed=seed,
                            format="json", json_schema=list_schema(count))
    out = gen.complete(alc.prompts.get(prompt).render(n=count, **values), params)
    try:
        items = json.loads(out.text)["questions"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise GeneratorError(f"no question list from {gen.name} (finish: {out.finish_reason})",
                            hint="a cut-off reply: try fewer questions per document") from None
    return [q.strip() for q in items if isinstance(q, str) and q.strip()]


def _origin(alc: Alicerce, model: str | None, prompt: str, **extra: object) -> dict[str, object]:
    gen = alc.generator(model)
    return {"synthetic": True, "generator": gen.name,
            "model_identity": alc.model_identity(gen),
            "prompt": alc.prompts.get(prompt).ref, **extra}


def questions(alc: Alicerce, collection: str, *, per_doc: int = 3, model: str | None = None,
              max_docs: int | None = None, verify: Judge | None = None, seed: int = 0,
              progress: Callable[[int, int], None] | None = None) -> Synthesis:
    """`per_doc` questions from each document's opening passage (up to PASSAGE_CHARS)."""
    coll = alc.store.collection(collection)
    if coll is None:
        raise NotFoundError(f"no collection named {collection!r}",
                            hint="`alicerce collections` lists them")
    docs = list(alc.store.document_chunks(coll))[:max_docs]
    out, keep = Synthesis([]), _Filter()
    for i, (key, title, chunks) in enumerate(docs):
        passage = ""
        for c in chunks:
            if passage and len(passage) + len(c) > PASSAGE_CHARS:
                break
            passage += ("\n" if passage else "") + c
        passage = passage[:PASSAGE_CHARS * 2]
        language = detect(passage)
        try:
            found = _ask(alc, model, "synth-question", per_doc, seed + i, title=title,
                         text=passage, language=language)
        except AlicerceError as exc:
            out.failed.append((key, str(exc)))
            found = []
        for q in found:
            reason = keep.reason(q, passage)
            if not reason and verify is not None:
                try:
                    if verify.context_relevance(q, [passage]).label == "NON_RELEVANT":
                        reason = "the judge says the passage does not answer it"
                except AlicerceError as exc:
                    reason = f"not verified: {exc}"
            if reason:
                out.dropped.append((q, reason))
                continue
            keep.keep(q)
            rid = "synth-" + hashlib.sha1(f"{key}\n{q}".encode()).hexdigest()[:10]
            out.rows.append(Row(rid, q, (key,), tags=("synthetic", language),
                                origin=_origin(alc, model, "synth-question", language=language,
                                               verified=verify is not None)))
        if progress:
            progress(i + 1, len(docs))
    return out


def paraphrases(alc: Alicerce, rows: Sequence[Row], *, n: int = 2, model: str | None = None,
                seed: int = 0, progress: Callable[[int, int], None] | None = None) -> Synthesis:
    """`n` rewordings of each row, with the same sources and reference."""
    out, keep = Synthesis([]), _Filter([r.question for r in rows])
    for i, row in enumerate(rows):
        language = detect(row.question)
        try:
            found = _ask(alc, model, "synth-paraphrase", n, seed + i, question=row.question,
                         language=language)
        except AlicerceError as exc:
            out.failed.append((row.id, str(exc)))
            found = []
        for j, q in enumerate(found):
            reason = keep.reason(q, None)
            if reason:
                out.dropped.append((q, reason))
                continue
            keep.keep(q)
            out.rows.append(Row(f"{row.id}-p{j + 1}", q, row.sources, row.reference,
                                (*row.tags, "paraphrase"), row.filters,
                                _origin(alc, model, "synth-paraphrase", paraphrase_of=row.id)))
        if progress:
            progress(i + 1, len(rows))
    return out
