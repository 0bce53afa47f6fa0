"""Context attribution by ablation (after ContextCite, Cohen-Wang et al. 2024, "ContextCite:
Attributing Model Generation to Context"): remove parts of the sources from the prompt the
model read, and measure how the answer's log-likelihood under the same model changes.

The calls, within a budget:
- the full prompt and the prompt with every source emptied (how much the answer rests on
  the sources at all);
- each source emptied in turn (leave-one-out: the answer's drop without it);
- then the sentences: each removed in turn when the budget allows one call per sentence
  (exact leave-one-out), else random halves of them, every call so far included, fitted by
  a sparse linear surrogate (Lasso, as ContextCite): a sentence's weight is how much keeping
  it raises the answer's log-likelihood.

A source's header ("[2] Title") stays when its text is removed, so the numbering the answer
cites keeps its meaning. Calls run concurrently: llama.cpp decodes them together on its
parallel slots.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from alicerce.errors import InputError
from alicerce.types import Message

Score = Callable[[Sequence[Message]], float]
MIN_EXTRA = 1  # calls beyond full, empty and the sources, so sentences get at least one


@dataclass(frozen=True)
class Unit:
    """A sentence of a source, where it sits in the prompt."""

    source: int  # the source's number, n in [n]
    message: int
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Ablation:
    full: float  # the answer's log-likelihood with every source
    empty: float  # ... with no source text at all
    sources: dict[int, float]  # n -> the drop in log-likelihood without that source
    units: tuple[float, ...]  # each sentence's attribution, in nats
    method: str  # "leave-one-out" or "lasso"
    calls: int
    fit_r2: float | None  # the surrogate's fit on the calls made (lasso)


def minimum_budget(sources: int) -> int:
    return 2 + sources + MIN_EXTRA


def ablate(messages: Sequence[Message], units: Sequence[Unit],
           keep: Sequence[bool]) -> list[Message]:
    """The prompt without the units not kept."""
    cuts: dict[int, list[tuple[int, int]]] = {}
    for u, k in zip(units, keep, strict=True):
        if not k:
            cuts.setdefault(u.message, []).append((u.start, u.end))
    out = []
    for i, m in enumerate(messages):
        text = m.content
        for start, end in sorted(cuts.get(i, ()), reverse=True):
            text = text[:start] + text[end:]
        out.append(Message(m.role, text))
    return out


def attribute(score: Score, messages: Sequence[Message], units: Sequence[Unit], budget: int,
              *, seed: int = 0, parallel: int = 1,
              progress: Callable[[int, int], None] | None = None) -> Ablation:
    if not units:
        raise InputError("the answer was given no source text: there is nothing to attribute "
                         "it to", hint="explanations are for answers from documents")
    numbers = sorted({u.source for u in units})
    if budget < minimum_budget(len(numbers)):
        raise InputError(f"a budget of {budget} model calls is too small for "
                         f"{len(numbers)} sources",
                         hint=f"use at least {minimum_budget(len(numbers))}")
    n = len(units)
    masks: list[list[bool]] = [[True] * n, [False] * n]
    masks += [[u.source != s for u in units] for s in numbers]
    left = budget - len(masks)
    loo = n <= left
    if loo:
        masks += [[j != i for j in range(n)] for i in range(n)]
    else:
        rng = random.Random(seed)
        masks += [[rng.random() < 0.5 for _ in range(n)] for _ in range(left)]
    done = [0]

    def call(mask: list[bool]) -> float:
        value = score(ablate(messages, units, mask))
        done[0] += 1
        if progress:
            progress(done[0], len(masks))
        return value
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        ys = list(pool.map(call, masks))
    full, empty = ys[0], ys[1]
    sources = {s: full - ys[2 + i] for i, s in enumerate(numbers)}
    if loo:
        first = 2 + len(numbers)
        return Ablation(full, empty, sources, tuple(full - y for y in ys[first:]),
                        "leave-one-out", len(masks), None)
    weights, r2 = _lasso(np.asarray(masks, dtype=float), np.asarray(ys), seed)
    return Ablation(full, empty, sources, tuple(float(w) for w in weights), "lasso",
                    len(masks), r2)


def _lasso(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """A sparse linear surrogate y ~ b + w.x (scikit-learn's Lasso, as ContextCite uses);
    the penalty scales with the spread of y, so it means the same in any model's nats."""
    from sklearn.linear_model import Lasso

    model = Lasso(alpha=0.01 * max(float(np.std(y)), 1e-6), random_state=seed,
                  max_iter=10000).fit(x, y)
    return model.coef_, float(model.score(x, y))
