"""Topic rail: keep an app in its domain by meaning, not keywords.

A topic is a few example requests (Portuguese and English); a text's score for a topic is
its highest cosine similarity to them on the bundled embedder. `deny` fires when a denied
topic reaches the threshold; `allow` fires when no allowed topic does (off-domain). Named
topics below are ready to use; any other string is taken as a description of its own, so
`deny: ["questions about our competitors' prices"]` works as written.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from alicerce.embed.base import Embedder
from alicerce.guard.base import Action, Context, Verdict
from alicerce.guard.classify import query_vectors

TOPICS: dict[str, tuple[str, ...]] = {
    "politics": (
        "Em quem devo votar na próxima eleição?",
        "O que você acha do presidente e do governo atual?",
        "Qual partido político é melhor, esquerda ou direita?",
        "Who should I vote for in the election?",
        "What is your opinion on the president and political parties?",
        "Is the left or the right wing better for the country?"),
    "medical-advice": (
        "Que remédio devo tomar para dor de cabeça e febre?",
        "Qual a dose de antibiótico para infecção de garganta?",
        "Tenho dor no peito, o que pode ser? Devo me automedicar?",
        "What medication should I take for my symptoms?",
        "How many milligrams of ibuprofen can I take per day?",
        "Can you diagnose this rash on my skin?"),
    "legal-advice": (
        "Como processar meu vizinho? Que advogado devo contratar?",
        "Posso ser preso por isso? O que diz a lei penal?",
        "How do I sue someone in court and win?",
        "What are my legal rights if I get arrested?"),
    "religion": (
        "Qual é a religião verdadeira? Deus existe?",
        "Which religion is the right one? Does God exist?"),
    "investment-advice": (
        "Em quais ações devo investir meu dinheiro agora?",
        "Vale a pena comprar bitcoin hoje?",
        "Which stocks should I buy to get rich quickly?",
        "Should I invest my savings in cryptocurrency?"),
}
DEFAULT_THRESHOLD = 0.86


@dataclass
class TopicGuard:
    embedder: Embedder
    deny: Sequence[str] = ()
    allow: Sequence[str] = ()
    threshold: float = DEFAULT_THRESHOLD
    name: str = "topics"
    action: Action = "block"
    _examples: dict[str, NDArray[np.float32]] = field(default_factory=dict, repr=False)

    def _vectors(self, topic: str) -> NDArray[np.float32]:
        if topic not in self._examples:
            examples = list(TOPICS.get(topic, (topic,)))
            self._examples[topic] = query_vectors(self.embedder, examples)
        return self._examples[topic]

    def scores(self, text: str, topics: Sequence[str]) -> dict[str, float]:
        q = query_vectors(self.embedder, [text])[0]
        return {t: float((self._vectors(t) @ q).max()) for t in topics}

    def check(self, text: str, ctx: Context) -> Verdict:
        t0 = time.perf_counter()
        denied = self.scores(text, self.deny) if self.deny else {}
        allowed = self.scores(text, self.allow) if self.allow else {}
        hit = max(denied, key=lambda t: denied[t], default=None)
        reason, score = "", 0.0
        if hit is not None and denied[hit] >= self.threshold:
            reason, score = f"denied topic: {hit} (similarity {denied[hit]:.2f})", denied[hit]
        elif allowed and max(allowed.values()) < self.threshold:
            best = max(allowed.values())
            reason, score = f"outside the allowed topics (best similarity {best:.2f})", 1 - best
        return Verdict(self.name, self.action if reason else "allow", score, reason,
                       (time.perf_counter() - t0) * 1000, text,
                       details={"deny": {k: round(v, 3) for k, v in denied.items()},
                                "allow": {k: round(v, 3) for k, v in allowed.items()}})
