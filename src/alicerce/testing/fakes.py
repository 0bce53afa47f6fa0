"""Deterministic stand-ins for the model backends, for fast unit tests."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from alicerce.chains.answerable import CHECK
from alicerce.embed.base import Vectors, approx_tokens, normalise
from alicerce.errors import GeneratorError
from alicerce.generate.params import DecodingParams
from alicerce.types import Choice, Completion, Delta, Message, Usage

_TOKEN = re.compile(r"\w+", re.UNICODE)


class HashingEmbedder:
    """Feature-hashed bag of words: texts sharing words get similar vectors, no weights needed."""

    def __init__(self, dim: int = 256) -> None:
        self.dim = dim
        self.name = f"hashing-{dim}"
        self.calls = 0

    def _vec(self, text: str) -> Vectors:
        v = np.zeros(self.dim, dtype=np.float32)
        for word in _TOKEN.findall(text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 63) else -1.0
        return v

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        self.calls += len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalise(np.stack([self._vec(t) for t in texts]))

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self.embed_passages(texts)

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)


class ScriptedGenerator:
    """Replies from a script: a fixed text, a list consumed in order, or a function of the
    messages. Records every call, so tests can check the prompts a chain built. The grounded
    answer's yes/no answerability question (chains/answerable.py) is answered apart, with
    `answerable` ("sim" unless a test says otherwise), and recorded in `checks`, so a script
    of answers is not consumed by it."""

    backend = "fake"
    context_size = 8192

    def __init__(self, reply: str | list[str] | Callable[[Sequence[Message]], str],
                 name: str = "scripted", answerable: str = "sim",
                 scorer: Callable[[Sequence[Message], str], float] | None = None) -> None:
        self.name = name
        self._reply = reply
        self._scorer = scorer
        self.answerable = answerable
        self.calls: list[list[Message]] = []
        self.checks: list[list[Message]] = []
        self.scored: list[list[Message]] = []

    def _next(self, messages: Sequence[Message]) -> str:
        if messages and messages[-1].content.endswith(tuple(CHECK.values())):
            self.checks.append(list(messages))
            return self.answerable
        self.calls.append(list(messages))
        if callable(self._reply):
            return self._reply(messages)
        if isinstance(self._reply, list):
            return self._reply.pop(0)
        return self._reply

    def complete(self, messages: Sequence[Message], params: DecodingParams) -> Completion:
        text = self._next(messages)
        choices = tuple(Choice(text, "stop") for _ in range(params.n))
        usage = Usage(sum(approx_tokens(m.content) for m in messages), approx_tokens(text))
        return Completion(self.name, choices, usage, {"total_ms": 0.0})

    def stream(self, messages: Sequence[Message], params: DecodingParams) -> Iterator[Delta]:
        done = self.complete(messages, params)
        for piece in re.findall(r"\S+\s*", done.text):
            yield Delta(piece)
        yield Delta("", "stop", done.usage)

    def count_tokens(self, text: str) -> int:
        return approx_tokens(text)

    def score(self, messages: Sequence[Message], text: str) -> float:
        """The script's log-likelihood of a reply (answer explanations), if it has one."""
        if self._scorer is None:
            raise GeneratorError(f"{self.name} has no scorer", hint="pass scorer=")
        self.scored.append(list(messages))
        return self._scorer(messages, text)
