"""Answer metrics against a reference: ROUGE-1/2/L, BLEU, exact match, token F1, and the
embedding cosine (computed by the caller's embedder, batched).

ROUGE comes from Google's `rouge-score` with our tokenizer: its own drops every character
outside a-z0-9, which would erase "é", "ç" and "ã" from Portuguese. BLEU is sacrebleu's
sentence BLEU (0-1 here, not 0-100). Exact match and F1 follow SQuAD's normalisation
(lower case, no punctuation, no articles), with Portuguese articles added. Several
references (FaQuAD's spans, Pirá's two answers) score as the best of them, as SQuAD does.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import sacrebleu
from rouge_score import rouge_scorer

ARTICLES = frozenset({"o", "a", "os", "as", "um", "uma", "the", "an", "de", "do", "da", "dos",
                      "das"})
_WORD = re.compile(r"\w+", re.UNICODE)
# Typographic quotes, dashes and the ellipsis count as punctuation too.
_QUOTES = "\u00ab\u00bb\u201c\u201d\u2018\u2019\u2014\u2013\u2026"
_PUNCT = str.maketrans({c: " " for c in string.punctuation + _QUOTES})


def normalise(text: str) -> list[str]:
    """SQuAD normalisation: lower case, punctuation out, articles out."""
    return [w for w in text.lower().translate(_PUNCT).split() if w not in ARTICLES]


class _Tokenizer:
    """rouge-score's tokenizer seam: Unicode words, lower-cased."""

    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())


@lru_cache(maxsize=1)
def _rouge() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_Tokenizer())


def f1(pred: str, gold: str) -> float:
    p, g = normalise(pred), normalise(gold)
    common = sum((Counter(p) & Counter(g)).values())
    if not common:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def exact_match(pred: str, gold: str) -> float:
    return float(normalise(pred) == normalise(gold))


def contains(pred: str, gold: str) -> bool:
    """The normalised reference appears inside the normalised answer."""
    return " ".join(normalise(gold)) in " ".join(normalise(pred))


_THOUSANDS = re.compile(r"(?<=\d)\.(?=\d{3}(?!\d))")


def task_success(pred: str, groups: Sequence[str | Sequence[str]]) -> float:
    """1.0 when every group is in the answer (a group is a text or a list of alternatives:
    "2026-04-02" or "2 de abril"); numbers match with or without thousands dots."""
    text = _THOUSANDS.sub("", pred.lower())
    for group in groups:
        options = [group] if isinstance(group, str) else list(group)
        if not any(_THOUSANDS.sub("", o.lower()) in text for o in options):
            return 0.0
    return 1.0


def answer_scores(pred: str, references: Sequence[str]) -> dict[str, float]:
    """Every answer metric, each the best over the references."""
    refs = [r for r in references if r.strip()] or [""]
    out: dict[str, float] = {}
    for ref in refs:
        rouge = _rouge().score(ref, pred)
        scores = {"rouge1": rouge["rouge1"].fmeasure, "rouge2": rouge["rouge2"].fmeasure,
                  "rougeL": rouge["rougeL"].fmeasure,
                  "bleu": sacrebleu.sentence_bleu(pred, [ref]).score / 100.0,
                  "exact_match": exact_match(pred, ref), "f1": f1(pred, ref)}
        for k, v in scores.items():
            out[k] = max(out.get(k, 0.0), v)
    return out


def excerpt(text: str, n: int = 160) -> str:
    """`text` on one line, cut to `n` characters with an ellipsis (reports, the CLI)."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
