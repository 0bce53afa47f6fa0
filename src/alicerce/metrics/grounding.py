"""Groundedness without an NLI model: the checkable facts of an answer (numbers, names),
the word overlap of each claim with the passages, and, when a judge is given, the judge's
verdict, combined into one score in [0, 1].

Numbers and names are what small models most often invent and what a reader can check, and
they survive paraphrase and translation where word overlap does not; the judge covers the
claims that have neither. An answer that states a number the passages lack is capped at 0.5
whatever the judge says. The guardrails reuse `check` on live answers.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from alicerce.metrics.judges import Judge, Verdict

_CITE = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")
_PAGE = re.compile(r"\b(?:pages?|p[aá]ginas?|p[aá]g\.?|pp?\.)\s*(\d{1,5})\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+|\n+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"\w+", re.UNICODE)
# Capitalised words inside a sentence, and acronyms: names a reader can check.
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-ZÀ-Ý][\wÀ-ÿ]+(?:\s+[A-ZÀ-Ý][\wÀ-ÿ]+)*)")
_STOPWORDS = """a o e é de da do das dos em no na nos nas um uma uns umas para por com
sem que se ao aos à às ou mas como mais menos seu sua seus suas ele ela eles elas isso isto
esse essa este esta foi ser são está the of and to in is are for on with by an as at or be
it this that from was were can you your not"""
STOP = frozenset(_STOPWORDS.split())
NUMBER_CAP = 0.5


@dataclass(frozen=True)
class Grounding:
    """`score` combines the parts; `unsupported` lists the facts the passages lack."""

    score: float
    lexical: float
    facts: float
    judge: Verdict | None = None
    unsupported: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, object]:
        return {"score": self.score, "lexical": self.lexical, "facts": self.facts,
                "judge": self.judge.label if self.judge else None,
                "unsupported": list(self.unsupported)}


def fold(text: str) -> str:
    """Lower case without accents, so 'Política' matches 'politica'."""
    return "".join(c for c in unicodedata.normalize("NFKD", text.lower())
                   if not unicodedata.combining(c))


def _number(token: str) -> str:
    """'1.000,50' and '1,000.50' and '1000.5' compare equal: digits and the last separator."""
    digits = re.sub(r"[.,](?=\d{3}\b)", "", token)
    return digits.replace(",", ".").rstrip("0").rstrip(".") if "." in digits or "," in digits \
        else digits


def claims(answer: str) -> list[str]:
    """The answer's sentences, citation markers removed."""
    return [s.strip() for s in _SENTENCE.split(_CITE.sub("", answer)) if len(s.strip()) > 2]


def facts(answer: str) -> tuple[list[str], list[str]]:
    """The numbers and the names of an answer."""
    text = _CITE.sub("", answer)
    names = [m.group(1) for s in claims(text) for m in _NAME.finditer(s)]
    return _NUMBER.findall(text), names


def check(answer: str, contexts: Sequence[str], judge: Judge | None = None,
          pages: Collection[int] = ()) -> Grounding:
    """How well `contexts` support `answer` (1 = fully). A page the answer names ("page
    10", "página 3") must be one of the sources' `pages`, or it counts as an invented
    number (a figure elsewhere in the passages does not make it true)."""
    context = fold(" ".join(contexts))
    ctx_words = set(_WORD.findall(context))
    ctx_numbers = {_number(n) for n in _NUMBER.findall(context)}
    overlaps = []
    for claim in claims(answer):
        words = [w for w in _WORD.findall(fold(claim)) if w not in STOP and len(w) > 2]
        if words:
            overlaps.append(sum(w in ctx_words for w in words) / len(words))
    lexical = sum(overlaps) / len(overlaps) if overlaps else 1.0
    numbers, names = facts(_PAGE.sub("", answer))  # pages are judged by `pages` alone
    missing = [n for n in numbers if _number(n) not in ctx_numbers]
    missing += [n for n in names if fold(n) not in context]
    named_pages = _PAGE.findall(_CITE.sub("", answer))
    bad_pages = [f"page {p}" for p in named_pages if int(p) not in set(pages)]
    missing += bad_pages
    checked = len(numbers) + len(names) + len(named_pages)
    fact_score = 1.0 - len(missing) / checked if checked else 1.0
    verdict = judge.groundedness(answer, contexts) if judge else None
    score = (0.5 * verdict.score + 0.25 * lexical + 0.25 * fact_score if verdict
             else 0.5 * lexical + 0.5 * fact_score)
    if bad_pages or any(_NUMBER.fullmatch(m) for m in missing):
        score = min(score, NUMBER_CAP)
    return Grounding(round(score, 4), round(lexical, 4), round(fact_score, 4), verdict,
                     tuple(dict.fromkeys(missing)))
