"""Text classifiers on the bundled multilingual embedder: prompt injection, toxicity and
harmful requests.

Each is a logistic-regression head on e5-small query embeddings, trained by
`bench/train_guards.py` on licensed public data plus Portuguese examples of our own; the
weights (a few KB of JSON, with their data sources and licences) ship in `heads/`. A linear
head on a multilingual encoder was chosen over the packaged detectors after comparing them
on the deepset test split (docs/benchmarks.md): it scores higher, covers Portuguese through
the encoder, needs no torch, and costs one embedding (~15 ms) per text, which the topic
rail shares.

Long texts are scored in windows and the highest window counts: an injection hidden at the
end of a long document must not be averaged away, and e5 reads at most 512 tokens.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np
from numpy.typing import NDArray

from alicerce.embed.base import Embedder
from alicerce.errors import ConfigError
from alicerce.guard.base import Action, Context, Verdict

HEADS = ("injection", "toxicity", "harmful")
WINDOW_WORDS = 200
_REASONS = {"injection": "looks like a prompt injection or jailbreak",
            "toxicity": "toxic or abusive language",
            "harmful": "asks for harmful content"}


_MEMO: OrderedDict[tuple[int, str], NDArray[np.float32]] = OrderedDict()
_MEMO_LOCK = threading.Lock()
MEMO_SIZE = 512


def query_vectors(embedder: Embedder, texts: Sequence[str]) -> NDArray[np.float32]:
    """Query embeddings, remembered for the last few hundred texts: the classifier and
    topic rails of one request read the same question (and a streamed answer is checked
    again whole at the end), so each text is embedded once."""
    key = id(embedder)
    with _MEMO_LOCK:
        known = {t: _MEMO[(key, t)] for t in texts if (key, t) in _MEMO}
    missing = list(dict.fromkeys(t for t in texts if t not in known))
    if missing:
        fresh = np.asarray(embedder.embed_queries(missing), dtype=np.float32)
        known.update(zip(missing, fresh, strict=True))
        with _MEMO_LOCK:
            for t, v in zip(missing, fresh, strict=True):
                _MEMO[(key, t)] = v
            while len(_MEMO) > MEMO_SIZE:
                _MEMO.popitem(last=False)
    rows = [known[t] for t in texts]
    return np.stack(rows)


@dataclass(frozen=True)
class Head:
    name: str
    weights: NDArray[np.float32]
    bias: float
    threshold: float
    meta: dict[str, Any]

    def probabilities(self, vectors: NDArray[np.float32]) -> NDArray[np.float64]:
        z = vectors.astype(np.float64) @ self.weights.astype(np.float64) + self.bias
        return np.asarray(1.0 / (1.0 + np.exp(-z)))


@cache
def head(name: str) -> Head:
    """A shipped head by name (read once per process)."""
    if name not in HEADS:
        raise ConfigError(f"no classifier head {name!r}", hint="use " + ", ".join(HEADS))
    try:
        data = json.loads(resources.files("alicerce.guard").joinpath(
            f"heads/{name}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the {name} classifier weights cannot be read: {exc}",
                          hint="reinstall alicerce; bench/train_guards.py rebuilds them") \
            from None
    return Head(name, np.asarray(data["weights"], dtype=np.float32), float(data["bias"]),
                float(data["threshold"]), {k: v for k, v in data.items()
                                           if k not in ("weights", "bias")})


def windows(text: str, words: int = WINDOW_WORDS) -> list[str]:
    """Overlapping word windows (half a window apart) covering the whole text."""
    tokens = text.split()
    if len(tokens) <= words:
        return [text]
    step = words // 2
    return [" ".join(tokens[i:i + words]) for i in range(0, len(tokens) - step, step)]


@dataclass
class ClassifierGuard:
    """A rail that fires when the head's probability reaches `threshold`."""

    name: str
    embedder: Embedder
    action: Action = "block"
    threshold: float | None = None

    def score(self, texts: list[str]) -> list[float]:
        """The probability for each text (highest window)."""
        h = head(self.name)
        parts = [windows(t) for t in texts]
        flat = [w for p in parts for w in p]
        probs = h.probabilities(query_vectors(self.embedder, flat))
        out, i = [], 0
        for p in parts:
            out.append(float(probs[i:i + len(p)].max()))
            i += len(p)
        return out

    def check(self, text: str, ctx: Context) -> Verdict:
        t0 = time.perf_counter()
        p = self.score([text])[0]
        limit = head(self.name).threshold if self.threshold is None else self.threshold
        fired = p >= limit
        return Verdict(self.name, self.action if fired else "allow", p,
                       f"{_REASONS[self.name]} (p={p:.2f})" if fired else "",
                       (time.perf_counter() - t0) * 1000, text)
