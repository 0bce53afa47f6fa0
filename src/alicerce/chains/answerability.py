"""Do the retrieved passages hold the answer? A small head read before the model is asked.

Retrieval always finds something on the collection's topic, and qwen-1.5b answers from
whatever it is shown, so "the documents do not say" was never said. Neither the model's own
P(yes) (chains/answerable.py) nor one similarity separates the cases (ROC AUC 0.47-0.55,
docs/benchmarks.md). What does: whether the best sentence stands out from the other
retrieved sentences, and whether the question's content words are in what the model will
read. Nine such features feed a logistic regression trained by
`bench/train_answerability.py` on questions whose source was taken out of the collection
(FaQuAD, Pirá validation, LLM Zoomcamp FAQ), shipped as JSON with its data and threshold.

It costs no model call (the sentence scores are the ones the windows were chosen by), and
an abstention from it costs no prompt processing either. Cosine levels belong to one
embedder, so the head applies only to the embedder it was trained on; and a question whose
best passages are in another language is not judged (its words cannot be matched).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from functools import cache
from importlib import resources
from typing import Any

from alicerce.chains.select import FOREIGN_TOP, Scored
from alicerce.config import Settings
from alicerce.errors import ConfigError
from alicerce.language import FUNCTION_WORDS, detect
from alicerce.metrics.grounding import fold
from alicerce.types import Hit

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_QUESTION_WORDS = """qual quais quanto quantos quanta quantas quando onde como porque ser são
foi foram tem têm pode podem deve devem what which how many much when where who whom why does
do did is are can"""


_STOP = frozenset(fold(w) for w in (*FUNCTION_WORDS, *_QUESTION_WORDS.split()))


def stems(text: str) -> frozenset[str]:
    """Content words cut to five letters, accents folded: a light stemmer that treats
    'reembolso' and 'reembolsáveis' alike in Portuguese and English."""
    return frozenset(fold(w)[:5] for w in _WORD.findall(text)
                     if len(w) > 2 and fold(w) not in _STOP)


@dataclass(frozen=True)
class Features:
    """What the head reads: sentence cosines (best, and its lead over the 2nd, the mean of
    the 10 best and the median), the first passage's dense similarity and its lead, and the
    share of the question's content words in the context, the best window, any sentence."""

    best: float
    lead_2: float
    lead_10: float
    lead_median: float
    dense: float
    dense_lead: float
    covered_context: float
    covered_window: float
    covered_sentence: float


def features(question: str, hits: Sequence[Hit], scored: Scored,
             chosen: Sequence[Hit]) -> Features | None:
    """The head's input for `question` over the retrieved `hits` (sentences in `scored`)
    and the `chosen` windows; None when it cannot judge: nothing retrieved, or passages in
    another language than the question's among the best (words cannot be matched)."""
    if not scored.ranked or any(detect(h.text, scored.language) != scored.language
                                for h in hits[:FOREIGN_TOP]):
        return None
    ranked = [w.score for w in scored.ranked]
    best = ranked[0]
    median = sorted(ranked)[len(ranked) // 2]
    dense = [h.scores.get("dense", 0.0) for h in hits]
    asked = stems(question)
    top = scored.ranked[0]
    around = scored.split[top.hit][max(0, top.index - 1):top.index + 2]
    window = stems(" ".join(around) + " " + hits[top.hit].title)

    def covered(words: frozenset[str]) -> float:
        return len(asked & words) / max(1, len(asked))

    return Features(
        best=best, lead_2=best - (ranked[1] if len(ranked) > 1 else best),
        lead_10=best - sum(ranked[:10]) / len(ranked[:10]), lead_median=best - median,
        dense=dense[0], dense_lead=dense[0] - (dense[1] if len(dense) > 1 else 0.0),
        covered_context=covered(stems(" ".join(h.text for h in chosen))),
        covered_window=covered(window),
        covered_sentence=max(covered(stems(s) | stems(hits[i].title))
                             for i, ss in enumerate(scored.split) for s in ss))


@dataclass(frozen=True)
class Head:
    """A logistic regression over standardised features, and its calibrated threshold."""

    embedder: str  # the embedder name's prefix the head was trained on
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    threshold: float

    def applies(self, embedder: str) -> bool:
        return embedder.startswith(self.embedder)

    def probability(self, f: Features) -> float:
        """P(the passages hold the answer)."""
        z = self.intercept + sum(c * (x - m) / s for c, x, m, s in zip(
            self.coef, astuple(f), self.mean, self.scale, strict=True))
        return 1.0 / (1.0 + math.exp(-z))


NAMES = tuple(f.name for f in fields(Features))


@cache
def shipped() -> Head:
    """The head in heads/answerable.json (written by bench/train_answerability.py)."""
    raw = json.loads(resources.files("alicerce.chains").joinpath(
        "heads/answerable.json").read_text(encoding="utf-8"))
    if tuple(raw["features"]) != NAMES:
        raise ConfigError("heads/answerable.json was trained on other features",
                          hint="run python bench/train_answerability.py")
    return Head(raw["embedder"], tuple(raw["mean"]), tuple(raw["scale"]), tuple(raw["coef"]),
                float(raw["intercept"]), float(raw["threshold"]))


def head_min(settings: Settings) -> float:
    """The threshold the settings ask for: the head's own unless one is set."""
    if settings.answerable_head_min is not None:
        return settings.answerable_head_min
    return shipped().threshold


def judged(question: str, hits: Sequence[Hit], scored: Scored, chosen: Sequence[Hit],
           embedder: str, floor: float, span: dict[str, Any]) -> bool:
    """Whether to answer: False when the head, where it applies, puts P(the passages hold
    the answer) under `floor`. What it saw goes into the context `span`."""
    head = shipped()
    if not head.applies(embedder):
        span["answerable_head"] = f"not judged: trained for {head.embedder}, not {embedder}"
        return True
    f = features(question, hits, scored, chosen)
    if f is None:
        span["answerable_head"] = "not judged: the best passages are in another language"
        return True
    p = head.probability(f)
    span.update(answerable_head=round(p, 4), answerable_head_min=floor)
    return p >= floor
