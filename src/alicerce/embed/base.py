"""The Embedder seam: what ingestion and search need from an embedding model."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

Vectors = NDArray[np.float32]

_WORDISH = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors.

    Queries and passages are separate calls because asymmetric models (e5) prefix them
    differently; symmetric models may treat both alike. `name` is recorded in every
    collection version, so it must change whenever the vectors would.
    """

    name: str
    dim: int

    def embed_passages(self, texts: Sequence[str]) -> Vectors: ...

    def embed_queries(self, texts: Sequence[str]) -> Vectors: ...

    def count_tokens(self, text: str) -> int: ...


def approx_tokens(text: str) -> int:
    """Sub-word token estimate for backends without a local tokenizer (about 1.3 per word)."""
    n = len(_WORDISH.findall(text))
    return max(1, int(n * 1.3 + 0.5)) if text else 0


def normalise(vectors: NDArray[np.floating]) -> Vectors:
    """Scale rows to unit length so that inner product equals cosine similarity."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Vectors = (arr / norms).astype(np.float32, copy=False)
    return out


def batched(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]
