"""Rerankers that read the passage: an LLM judging relevance, and a cross-encoder.

Both score (query, passage) pairs and return one number per passage, higher is better;
the chain's `rerank` step sorts by it. Fusion (retrieve/rerank.py) stays the default: it
costs nothing, while these cost a model call per passage (docs/benchmarks.md).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any

from alicerce.errors import ConfigError
from alicerce.generate.base import Generator
from alicerce.generate.params import DecodingParams
from alicerce.prompts.template import PromptTemplate
from alicerce.types import Choice

_YES = ("yes", "sim", "y", "s")
_NO = ("no", "não", "nao", "n")
# One token, greedy, with the alternatives' probabilities: P(yes) is the score.
ONE_TOKEN = DecodingParams(max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=10)


class LlmReranker:
    """Pointwise: the model answers yes or no to "does this passage answer the query?";
    the score is P(yes) / (P(yes) + P(no)) from the first token's log-probabilities, or
    1/0 from the text when the backend gives none."""

    def __init__(self, generator: Generator, prompt: PromptTemplate) -> None:
        self.gen, self.prompt = generator, prompt
        self.name = f"llm:{generator.name}"

    def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        return [self._score(query, p) for p in passages]

    def _score(self, query: str, passage: str) -> float:
        done = self.gen.complete(self.prompt.render(query=query, passage=passage), ONE_TOKEN)
        return yes_share(done.choices[0])


def yes_share(choice: Choice) -> float:
    """P(yes) / (P(yes) + P(no)) of a one-token answer to a yes/no question (asked with
    ONE_TOKEN), or 1/0 from its text when the backend gives no log-probabilities."""
    if choice.logprobs:
        yes = no = 0.0
        for token, lp in choice.logprobs[0].top:
            word = token.strip().lower()
            if word in _YES:
                yes += math.exp(lp)
            elif word in _NO:
                no += math.exp(lp)
        if yes + no > 0:
            return yes / (yes + no)
    return 1.0 if choice.text.strip().lower().startswith(_YES[:2]) else 0.0


class CrossEncoderReranker:
    """User-supplied sentence-transformers CrossEncoder weights from a local folder (never
    downloaded); loaded once, on first use."""

    _lock = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = f"cross-encoder:{path}"
        self._model: Any = None

    def scores(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        return [float(s) for s in self._load().predict([(query, p) for p in passages],
                                                       show_progress_bar=False)]

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                try:
                    from sentence_transformers import CrossEncoder
                except ImportError:
                    raise ConfigError(
                        "the cross-encoder reranker needs sentence-transformers and torch",
                        hint="pip install torch==2.13.0, then pip install "
                             "'alicerce[minilm]'") from None
                self._model = CrossEncoder(self.path, device="cpu", local_files_only=True)
            return self._model
