"""Which words of the retrieved passages the model reads: sentence windows chosen by the
embedder, in a token budget.

On a laptop CPU the prompt, not the answer, sets a grounded answer's latency: qwen-1.5b reads
~45 tokens/s on 2 cores, so six 200-token chunks cost ~30 s before the first word. Most of
those tokens do not bear on the question. Each passage is split into sentences, every
sentence is scored against the question by the embedder (cosine, the sentence read under its
document's title and section), and the best sentences go
in with their neighbours (a window keeps the sentence that names the subject next to the one
that answers) until the budget is spent. A passage keeps its rank and number, so citations
still name the chunk; its text becomes the chosen windows joined by " … ". Passages none of
whose sentences were chosen are left out. The budget adapts: once `least` tokens are in, a
window scoring more than `drop` under the best sentence is left out: a question one
sentence answers reads ~190 tokens, not 320, and the answer stayed in the context as often
on FaQuAD, Pirá, Zoomcamp and the handbook's golden set (`bench/windows_recall.py`). The
sentences in another language than the question's are measured against their own best,
among the `FOREIGN_TOP` best retrieved passages: the embedder scores a Portuguese sentence
lower against an English question than any English sentence, so the Portuguese answer to an
English question would never be near the best, while retrieval (fusion) ranks its passage
well.
`bench/latency.py` and `bench/answers.py` measure the quality/latency curve per budget
(docs/benchmarks.md).
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from alicerce.embed.base import Embedder
from alicerce.language import detect
from alicerce.types import Hit

# A sentence ends at . ! ? ; before a capital, a digit, a quote or a list mark; a blank line
# or a line that starts a list item or a heading ends one too. Other line breaks are hard
# wraps (Markdown, text files, PDFs) inside a sentence.
_SPLIT = re.compile(r"(?<=[.!?;])\s+(?=[\"'(\[A-ZÀ-Ý0-9*-])|\s*\n\s*\n\s*|"
                    r"\s*\n(?=\s*(?:[-*•#]|\d{1,3}[.)])\s)")
_WRAP = re.compile(r"\s*\n\s*")
_NORM = re.compile(r"[^\w]+", re.UNICODE)
_MIN_WORDS = 4  # a fragment shorter than this joins its neighbour ("1.", "## Prazos")
GAP = " … "
_CUTS = re.compile(_SPLIT.pattern + "|" + re.escape(GAP.strip()))
HEADER_TOKENS = 12  # the "[n] title — section" line of each source
FOREIGN_TOP = 3  # passages whose sentences in another language have their own best


def sentences(text: str) -> list[str]:
    """`text` cut into sentences (and list items, lines), short fragments merged forward."""
    out: list[str] = []
    carry = ""
    for piece in _SPLIT.split(text):
        piece = _WRAP.sub(" ", piece).strip()
        if not piece:
            continue
        piece = f"{carry} {piece}".strip() if carry else piece
        if len(piece.split()) < _MIN_WORDS:
            carry = piece
            continue
        out.append(piece)
        carry = ""
    if carry:
        if out:
            out[-1] = f"{out[-1]} {carry}"
        else:
            out.append(carry)
    return out


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Where `text`'s sentences are, as (start, end) offsets into it: cut where `sentences`
    cuts and at the windows' gap marks, trimmed, short fragments merged forward. Unlike
    `sentences` it keeps `text` as it is, so a sentence can be removed from a prompt."""
    spans: list[tuple[int, int]] = []
    start, carry = 0, None
    cuts = [(m.start(), m.end()) for m in _CUTS.finditer(text)] + [(len(text), len(text))]
    for cut, after in cuts:
        a, b = start, cut
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        start = after
        if a == b:
            continue
        a = carry if carry is not None else a
        if len(text[a:b].split()) < _MIN_WORDS:
            carry = a
            continue
        spans.append((a, b))
        carry = None
    if carry is not None:
        end = len(text.rstrip())
        if spans:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((carry, end))
    return spans


@dataclass(frozen=True)
class Window:
    """A chosen sentence, with its passage's rank and its place in the passage."""

    hit: int
    index: int
    score: float
    native: bool = True  # in the question's language


class SentenceCache:
    """Sentence vectors by embedder and text (LRU, bounded): the same chunks come back for
    related questions, and embedding them is most of the selection's cost."""

    def __init__(self, size: int = 20_000) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def vectors(self, embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
        keys = [(embedder.name, t) for t in texts]
        with self._lock:
            missing = [k for k in dict.fromkeys(keys) if k not in self._items]
        fresh = (embedder.embed_passages([t for _, t in missing]) if missing
                 else np.zeros((0, 1), dtype=np.float32))
        with self._lock:
            for k, v in zip(missing, fresh, strict=True):
                self._items[k] = np.asarray(v, dtype=np.float32)
            out = []
            for k in keys:
                v = self._items.get(k)
                if v is None:  # evicted by a concurrent request meanwhile
                    v = np.asarray(embedder.embed_passages([k[1]])[0], dtype=np.float32)
                self._items[k] = v
                self._items.move_to_end(k)
                out.append(v)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return np.stack(out)


_CACHE = SentenceCache()


@dataclass(frozen=True)
class Scored:
    """Every sentence of the retrieved passages, scored against the question, best first:
    what the windows are chosen from, and what the answerability head reads."""

    split: tuple[tuple[str, ...], ...]
    ranked: tuple[Window, ...]
    language: str


def score(question: str, hits: Sequence[Hit], embedder: Embedder) -> Scored:
    """The passages' sentences ranked by cosine to the question (each read under its title)."""
    split = tuple(tuple(sentences(h.text)) for h in hits)
    flat = [(i, j, s) for i, ss in enumerate(split) for j, s in enumerate(ss)]
    lang = detect(question)
    if not flat:
        return Scored(split, (), lang)
    q = np.asarray(embedder.embed_queries([question])[0], dtype=np.float32)
    scores = _CACHE.vectors(embedder, [_titled(hits[i], s) for i, _, s in flat]) @ q
    ranked = sorted((Window(i, j, float(sc), detect(s, lang) == lang)
                     for (i, j, s), sc in zip(flat, scores, strict=True)),
                    key=lambda w: (-w.score, w.hit, w.index))
    return Scored(split, tuple(ranked), lang)


def windows(question: str, hits: Sequence[Hit], embedder: Embedder, budget: int,
            count: Callable[[str], int], neighbours: int = 1, least: int | None = None,
            drop: float = 0.02, scored: Scored | None = None) -> tuple[Hit, ...]:
    """The passages as the model should read them: each one's best sentence windows, the
    whole set within `budget` tokens (past `least` tokens, only windows within `drop` of the
    best score), passages in their retrieval order (fusion ranks passages better than one
    sentence's cosine does). `scored`: the sentences already scored for this question."""
    scored = scored or score(question, hits, embedder)
    split, ranked = scored.split, scored.ranked
    if not ranked:
        return ()
    count = functools.cache(count)  # a sentence is priced once (llama.cpp: an HTTP call)
    foreign = max((w.score for w in ranked if not w.native and w.hit < FOREIGN_TOP),
                  default=1.0)
    chosen: dict[int, set[int]] = {}
    seen: set[str] = set()  # chunks overlap: a sentence is read once
    left = budget
    for w in ranked:
        if least is not None and budget - left >= least and w.score < ranked[0].score - drop \
                and (w.native or w.hit >= FOREIGN_TOP or w.score < foreign - drop):
            continue
        if _key(split[w.hit][w.index]) in seen and w.index not in chosen.get(w.hit, set()):
            continue
        new = [k for k in range(max(0, w.index - neighbours),
                                min(len(split[w.hit]), w.index + neighbours + 1))
               if k not in chosen.get(w.hit, set()) and _key(split[w.hit][k]) not in seen]
        if not new:
            continue
        cost = sum(count(split[w.hit][k]) + 1 for k in new)
        cost += HEADER_TOKENS if w.hit not in chosen else 0
        if cost > left:
            if w.hit in chosen or left < HEADER_TOKENS + 8:
                continue
            new = [w.index] if w.index in new else []  # the sentence alone may still fit
            cost = sum(count(split[w.hit][k]) + 1 for k in new) + HEADER_TOKENS
            if not new or cost > left:
                continue
        chosen.setdefault(w.hit, set()).update(new)
        seen.update(_key(split[w.hit][k]) for k in new)
        left -= cost
    return tuple(replace(hits[i], text=_join(split[i], sorted(chosen[i])))
                 for i in sorted(chosen))


def _titled(hit: Hit, sentence: str) -> str:
    """A sentence as it is scored: under its document's title and section, which often carry
    what it is about (a FAQ answer's question is its title; "É proibido..." needs its
    heading)."""
    head = " — ".join(p for p in (hit.title, hit.section) if p)
    return f"{head}: {sentence}" if head else sentence


def _key(sentence: str) -> str:
    return _NORM.sub(" ", sentence.lower()).strip()


def _join(parts: Sequence[str], keep: Sequence[int]) -> str:
    out, prev = [], None
    for k in keep:
        if prev is not None and k != prev + 1:
            out.append(GAP.strip())
        out.append(parts[k])
        prev = k
    text = " ".join(out)
    if keep and keep[0] > 0:
        text = GAP.lstrip() + text
    if keep and keep[-1] < len(parts) - 1:
        text = text + GAP.rstrip()
    return text
