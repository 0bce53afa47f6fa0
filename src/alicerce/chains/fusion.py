"""RAG-Sequence and RAG-Token (Lewis et al. 2020, "Retrieval-Augmented Generation for
Knowledge-Intensive NLP Tasks"): answers conditioned on one passage at a time, fused.

Both weight passage d by p(d|q), a softmax over the passages' dense similarity (cosine,
comparable across passages of one query; temperature 0.1), uniform when retrieval gave
no dense score.

- sequence: one answer per passage; each is scored log p(d|q) + the mean log-probability
  of its tokens (the paper's "fast decoding": an answer is not re-scored under the other
  passages; the mean, not the sum, so a short reply does not win by being short), and the
  best is kept.
- token: one continuation per passage advances together. At each step every passage's
  model gives its top next tokens (log-probabilities from one-token completions of the
  shared prefix, which llama.cpp continues as an assistant prefill); the mixture
  sum_d p(d|q) p(t|q,d,prefix) picks the next token (greedy), and generation stops when
  the passages that end outweigh the best token. It costs one model call per passage per
  token, so it is for short answers.

The passages' calls (of a step) run at once: llama.cpp decodes them together on its
parallel slots, so on CPU they cost little more than one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TypeVar

from alicerce.generate.base import Generator
from alicerce.generate.params import DecodingParams
from alicerce.types import Completion, Hit, Message, Usage

Render = Callable[[Hit], Sequence[Message]]
T = TypeVar("T")
TEMPERATURE = 0.1
TOP = 10  # alternatives per passage and step (RAG-Token)


@dataclass(frozen=True)
class Fused:
    text: str
    best: int  # the passage (0-based) the answer mostly rests on
    prior: tuple[float, ...]
    scores: tuple[float, ...]  # sequence: each answer's score; token: each passage's weight
    candidates: tuple[str, ...]
    usage: Usage
    calls: int


def prior(hits: Sequence[Hit]) -> list[float]:
    """p(d|q): softmax of the dense similarities; uniform without them."""
    dense = [h.scores.get("dense") for h in hits]
    if not hits or any(d is None for d in dense):
        return [1.0 / len(hits)] * len(hits) if hits else []
    top = max(d for d in dense if d is not None)
    weights = [math.exp(((d or 0.0) - top) / TEMPERATURE) for d in dense]
    total = sum(weights)
    return [w / total for w in weights]


def sequence(gen: Generator, render: Render, hits: Sequence[Hit],
             params: DecodingParams) -> Fused:
    """RAG-Sequence: an answer per passage, the best by log p(d|q) + mean token log-prob."""
    p = prior(hits)
    asked = replace(params, n=1, logprobs=True, top_logprobs=1)
    usage, texts, scores = Usage(), [], []
    for done, pd in zip(_each(lambda h: gen.complete(render(h), asked), hits), p,
                        strict=True):
        usage += done.usage
        probs = done.choices[0].logprobs
        mean = sum(t.logprob for t in probs) / len(probs) if probs else -10.0
        texts.append(done.text.strip())
        scores.append(math.log(max(pd, 1e-12)) + mean)
    best = max(range(len(hits)), key=lambda i: scores[i])
    return Fused(texts[best], best, tuple(p), tuple(scores), tuple(texts), usage, len(hits))


def token(gen: Generator, render: Render, hits: Sequence[Hit],
          params: DecodingParams) -> Fused:
    """RAG-Token: the next token from the p(d|q)-weighted mixture of the passages'."""
    p = prior(hits)
    step = replace(params, n=1, max_tokens=1, temperature=0.0, logprobs=True,
                   top_logprobs=TOP, stop=())
    prompts = [list(render(h)) for h in hits]
    prefix, usage, calls = "", Usage(), 0
    support = [0.0] * len(hits)  # how much each passage backed the tokens chosen
    for _ in range(params.max_tokens):
        mixed: dict[str, float] = {}
        ends = 0.0
        nexts: list[dict[str, float]] = []
        asks = [[*msgs, Message("assistant", prefix)] if prefix else msgs for msgs in prompts]
        for i, done in enumerate(_each(lambda msgs: gen.complete(msgs, step), asks)):
            usage, calls = usage + done.usage, calls + 1
            choice = done.choices[0]
            # "stop" on a one-token call: the model ended (llama.cpp returns the prefill
            # with the new token as the text, so the text alone cannot tell)
            if choice.finish_reason == "stop" or not choice.logprobs:
                ends += p[i]
                nexts.append({})
                continue
            top = choice.logprobs[0].top or ((choice.logprobs[0].token,
                                              choice.logprobs[0].logprob),)
            dist = {t: math.exp(lp) for t, lp in top}
            nexts.append(dist)
            for t, q in dist.items():
                mixed[t] = mixed.get(t, 0.0) + p[i] * q
        if not mixed or ends >= max(mixed.values()):
            break
        chosen = max(mixed, key=lambda t: mixed[t])
        for i, dist in enumerate(nexts):
            support[i] += p[i] * dist.get(chosen, 0.0)
        prefix += chosen
        if any(s and s in prefix for s in params.stop):
            break
    best = max(range(len(hits)), key=lambda i: support[i]) if hits else 0
    return Fused(prefix.strip(), best, tuple(p), tuple(support), (), usage, calls)


def _each(fn: Callable[[T], Completion], items: Sequence[T]) -> list[Completion]:
    """`fn` over `items` at once, results in order."""
    with ThreadPoolExecutor(max(1, len(items))) as pool:
        return list(pool.map(fn, items))
