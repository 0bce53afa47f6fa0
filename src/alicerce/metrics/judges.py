"""Judges on any Generator: pointwise rubric labels and a pairwise preference judged in both
orders. Output is JSON forced by the backend's grammar (llama.cpp JSON-schema grammar,
`response_format` on OpenAI-compatible servers), so a small local model cannot break a run
with prose; what does go wrong (a cut-off reply, a timeout) raises JudgeError for that row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alicerce.errors import AlicerceError, JudgeError
from alicerce.generate.base import Generator
from alicerce.generate.params import DecodingParams
from alicerce.prompts.judges import SCHEMAS, SCORES
from alicerce.prompts.template import PromptTemplate

CONFIDENCE = {"low": 0.6, "medium": 0.8, "high": 1.0}


@dataclass(frozen=True)
class Verdict:
    label: str
    score: float
    explanation: str
    prompt: str  # name@version
    ms: float
    tokens: int


@dataclass(frozen=True)
class Preference:
    """The pairwise result after both orders: `winner` A, B or TIE, `confidence` 0.5-1."""

    winner: str
    confidence: float
    explanation: str
    orders: tuple[str, str]  # the verdict with A first, then with B first (mapped back)
    consistent: bool


class Judge:
    """Verdicts from one model. Greedy decoding, so the same inputs give the same label."""

    def __init__(self, gen: Generator, prompts: Callable[[str], PromptTemplate],
                 max_context_chars: int = 6000) -> None:
        self.gen = gen
        self._prompts = prompts
        self._max_context = max_context_chars
        self._params = DecodingParams(max_tokens=256, temperature=0.0, format="json")

    @property
    def name(self) -> str:
        return self.gen.name

    def _ask(self, prompt: str, **values: Any) -> tuple[dict[str, Any], Verdict]:
        template = self._prompts(prompt)
        params = DecodingParams(**{**self._params.__dict__, "json_schema": SCHEMAS[prompt]})
        started = time.perf_counter()
        try:
            out = self.gen.complete(template.render(**values), params)
        except AlicerceError as exc:
            raise JudgeError(f"judge {self.name} failed on {prompt}: {exc.message}",
                             hint=exc.hint) from None
        except Exception as exc:  # timeouts and connection errors of remote judges
            raise JudgeError(f"judge {self.name} failed on {prompt}: {exc}",
                             hint="check the judge model, or raise llm_timeout_s") from None
        ms = (time.perf_counter() - started) * 1000
        try:
            data = json.loads(out.text)
            label = str(data["label"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise JudgeError(f"judge {self.name} gave no verdict on {prompt} "
                             f"(finish: {out.finish_reason}): {out.text[:120]!r}",
                             hint="a cut-off reply: raise the judge's max tokens") from None
        return data, Verdict(label, SCORES.get(label, 0.0), str(data.get("explanation", "")),
                             template.ref, ms, out.usage.completion_tokens)

    def answer(self, question: str, answer: str, reference: str) -> Verdict:
        """The answer against the reference: RELEVANT / PARTLY_RELEVANT / NON_RELEVANT."""
        return self._ask("judge-answer", question=question, answer=answer,
                         reference=reference)[1]

    def answer_relevance(self, question: str, answer: str) -> Verdict:
        return self._ask("judge-answer-relevance", question=question, answer=answer)[1]

    def context_relevance(self, question: str, contexts: Sequence[str]) -> Verdict:
        return self._ask("judge-context-relevance", question=question,
                         contexts=self._fit(contexts))[1]

    def groundedness(self, answer: str, contexts: Sequence[str]) -> Verdict:
        return self._ask("judge-groundedness", answer=answer, contexts=self._fit(contexts))[1]

    def differ(self, question: str, answer_a: str, answer_b: str) -> Verdict:
        """DIFFERENT (score 1) or SAME: whether two answers to a question differ in
        substance. Fairness probes show it the reference question only, so the judge never
        sees the attribute that was changed."""
        return self._ask("judge-counterfactual", question=question, answer_a=answer_a,
                         answer_b=answer_b)[1]

    def pairwise(self, question: str, a: str, b: str, reference: str = "") -> Preference:
        """Judged as (A, B) and as (B, A): a preference that flips with the order is position
        bias, and comes out as a TIE."""
        first, v1 = self._ask("judge-pairwise", question=question, answer_a=a, answer_b=b,
                              reference=reference)
        second, v2 = self._ask("judge-pairwise", question=question, answer_a=b, answer_b=a,
                               reference=reference)
        w1 = v1.label
        w2 = {"A": "B", "B": "A"}.get(v2.label, v2.label)  # back to the caller's names
        c1 = CONFIDENCE.get(str(first.get("confidence")), 0.6)
        c2 = CONFIDENCE.get(str(second.get("confidence")), 0.6)
        if w1 == w2:
            winner, confidence = w1, (c1 + c2) / 2
        elif "TIE" in (w1, w2):  # one order prefers, the other cannot tell: a weak preference
            winner = w1 if w2 == "TIE" else w2
            confidence = 0.5 + ((c1 if w2 == "TIE" else c2) - 0.5) / 2
        else:
            winner, confidence = "TIE", 0.5
        return Preference(winner, round(confidence, 3),
                          v1.explanation if winner == w1 else v2.explanation,
                          (w1, w2), w1 == w2)

    def _fit(self, contexts: Sequence[str]) -> list[str]:
        """Passages cut to a character budget, so a judge prompt fits a small context."""
        budget = max(200, self._max_context // max(1, len(contexts)))
        return [c if len(c) <= budget else c[:budget] + " …" for c in contexts]
