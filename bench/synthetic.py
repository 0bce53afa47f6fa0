"""Synthetic clustered vectors (not uniform random, which makes ANN look harder and unlike
real embeddings): Gaussian clusters of varied spread around random unit centres."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def clustered(n: int, dim: int = 384, clusters: int = 1000, seed: int = 0
              ) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    which = rng.integers(0, clusters, n)
    spread = rng.uniform(0.15, 0.35, clusters).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for i in range(0, n, step):
        w = which[i : i + step]
        noise = rng.standard_normal((len(w), dim)).astype(np.float32)
        block = centres[w] + noise * (spread[w, None] / np.sqrt(dim))
        out[i : i + step] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def queries(base: NDArray[np.float32], n: int, seed: int = 1) -> NDArray[np.float32]:
    """Queries near (not equal to) stored vectors, like a question near its answer."""
    rng = np.random.default_rng(seed)
    picks = base[rng.integers(0, len(base), n)]
    noisy = picks + rng.standard_normal(picks.shape).astype(np.float32) * (0.3 / np.sqrt(
        base.shape[1]))
    return (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float32)


def exact_top(base: NDArray[np.float32], qs: NDArray[np.float32], k: int) -> NDArray[np.int64]:
    out = np.empty((len(qs), k), dtype=np.int64)
    for i in range(0, len(qs), 64):
        sims = qs[i : i + 64] @ base.T
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
        out[i : i + 64] = np.take_along_axis(top, order, axis=1)
    return out
