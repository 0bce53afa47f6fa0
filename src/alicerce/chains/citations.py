"""Citations in a grounded answer: `[n]` markers checked against the sources shown,
moved to the source that holds a claim's figures, added where one source plainly holds an
uncited sentence; and telling an abstention from an answer.

An answer can only cite what it was shown: markers naming no given source are removed
from the text, never reported.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from alicerce.prompts.builtin import ABSTAIN
from alicerce.store.query import STOPWORDS
from alicerce.types import Citation, Hit, Message

_CITE = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")
_SPACES = re.compile(r"[ \t]+([.,;:!?])")
_NORM = re.compile(r"[^\w]+", re.UNICODE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE = re.compile(r"((?<=[.!?])\s+|\n+)")
_REPEAT = re.compile(r"(\[\d+\])([.,;:]?)\s*\1")
_LIST_MARK = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")
_LIST_NUMBER = re.compile(r"\s*\d{1,3}[.)]?\s*")


def reattribute(text: str, sources: Sequence[Hit]) -> str:
    """Move a citation to the source that holds the figures of the claim it closes, when the
    cited source does not. A claim is the text since the previous marker. Small models often
    cite a neighbouring source; figures ("45 dias") are the checkable part of most answers,
    and they survive translation."""
    out, prev = [], 0
    for m in _CITE.finditer(text):
        claim = text[prev : m.start()]
        out += [claim, _best_marker(m.group(0), m.group(1), claim, sources)]
        prev = m.end()
    return "".join([*out, text[prev:]])


def _best_marker(marker: str, inner: str, claim: str, sources: Sequence[Hit]) -> str:
    numbers = set(_NUMBER.findall(claim))
    if not numbers:
        return marker
    cited = {int(n) for n in re.split(r"\s*[,;]\s*", inner)}
    holds = [i for i, h in enumerate(sources, 1) if numbers <= set(_NUMBER.findall(h.text))]
    if not holds or cited & set(holds):
        return marker
    words = set(_NORM.sub(" ", claim.lower()).split())
    best = max(holds, key=lambda i: (len(words & set(
        _NORM.sub(" ", sources[i - 1].text.lower()).split())), -i))
    return f"[{best}]"


def attach(text: str, sources: Sequence[Hit]) -> str:
    """Cite sentences the model left uncited, where one source plainly holds them: all their
    figures, or most of their content words. Small models often answer correctly from the
    sources and forget the marker; a sentence no source supports stays uncited."""
    parts = _SENTENCE.split(text)
    vocab = [set(_words(h.text)) for h in sources]
    numbers = [set(_NUMBER.findall(h.text)) for h in sources]
    for i in range(0, len(parts), 2):  # separators sit at odd positions
        sentence = parts[i]
        if _CITE.search(sentence) or not sentence.strip() or _LIST_NUMBER.fullmatch(sentence):
            continue  # "1." of a numbered list is no sentence to cite
        claim = _LIST_MARK.sub("", sentence)
        words, figures = set(_words(claim)), set(_NUMBER.findall(claim))
        best, score = 0, 0.0
        for n, (vs, ns) in enumerate(zip(vocab, numbers, strict=True), 1):
            if figures and not figures <= ns:
                continue
            share = len(words & vs) / len(words) if words else 0.0
            value = share + (1.0 if figures else 0.0)
            if value > score and (figures or (len(words) >= 3 and share >= 0.6)):
                best, score = n, value
        if best:
            body = sentence.rstrip()
            end = len(body) - len(body.rstrip(".!?:;"))
            parts[i] = f"{body[: len(body) - end]} [{best}]{body[len(body) - end:]}" + \
                sentence[len(body):]
    return "".join(parts)


def _words(text: str) -> list[str]:
    return [w for w in _NORM.sub(" ", text.lower()).split()
            if w not in STOPWORDS and not w.isdigit() and len(w) > 2]


def citations(text: str, sources: Sequence[Hit]) -> tuple[str, tuple[Citation, ...]]:
    """Keep `[n]` markers that name a given source; drop the rest from the text."""
    found: dict[int, Citation] = {}

    def keep(match: re.Match[str]) -> str:
        valid = []
        for part in re.split(r"\s*[,;]\s*", match.group(1)):
            n = int(part)
            if 1 <= n <= len(sources):
                valid.append(n)
                h = sources[n - 1]
                found.setdefault(n, Citation(n, h.chunk_id, h.doc_key, h.title, h.section,
                                             h.page, h.source, h.score))
        return "".join(f"[{n}]" for n in valid)

    cleaned = _SPACES.sub(r"\1", _CITE.sub(keep, text))
    cleaned = _REPEAT.sub(r"\1\2", cleaned).strip()  # "despesa [1]. [1]" -> "despesa [1]."
    return cleaned, tuple(sorted(found.values(), key=lambda c: c.n))


def interleave(ranked: Sequence[Sequence[Hit]]) -> list[Hit]:
    """Round-robin over ranked lists, dropping repeats: every list (the step-back question's,
    each collection's) gets its best chunks in."""
    out: dict[int, Hit] = {}
    for depth in range(max((len(r) for r in ranked), default=0)):
        for hits in ranked:
            if depth < len(hits):
                out.setdefault(hits[depth].chunk_id, hits[depth])
    return list(out.values())


def is_abstention(text: str) -> bool:
    return _starts_abstaining(text) or not text.strip()


_LEADING_MARKERS = re.compile(r"^\s*(?:\[\d+(?:\s*,\s*\d+)*\]\s*[.:]?\s*)+")


def _starts_abstaining(text: str) -> bool:
    """Small models sometimes put a marker first: "[1] Não encontrei isso nos documentos."."""
    head = _NORM.sub(" ", _LEADING_MARKERS.sub("", text).lower()).strip()
    return any(head.startswith(_NORM.sub(" ", a.lower()).strip()) for a in ABSTAIN.values())


def renumber(text: str, n: int) -> str:
    """Every marker made `[n]`: an answer written from one passage shown as [1] cites
    that passage by its place among all the sources."""
    return _CITE.sub(f"[{n}]", text)


def locate(messages: Sequence[Message], hits: Sequence[Hit]) -> list[dict[str, Any]]:
    """Where each shown source's text sits in the prompt (message, start, end), recorded in
    the trace so an explanation can remove parts of exactly what the model read; a source
    the template did not copy verbatim gets no place."""
    out: list[dict[str, Any]] = []
    msg, pos = 0, 0
    for n, h in enumerate(hits, 1):
        entry: dict[str, Any] = {"n": n, "chunk_id": h.chunk_id, "doc_key": h.doc_key,
                                 "title": h.title}
        for i in range(msg, len(messages)):
            at = messages[i].content.find(h.text, pos if i == msg else 0) if h.text else -1
            if at >= 0:
                entry.update(message=i, start=at, end=at + len(h.text))
                msg, pos = i, at + len(h.text)
                break
        out.append(entry)
    return out
