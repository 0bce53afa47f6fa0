"""Confidence intervals and agreement: percentile bootstrap over questions, paired bootstrap
for the difference between two runs, accuracy and Cohen's kappa.

Hand-written on numpy (a few lines each) instead of scipy.stats.bootstrap or scikit-learn,
which would be new dependencies of the default install for these few formulas; the seed is
fixed so the same scores always give the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95% bootstrap interval, over `n` scored questions."""

    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def bootstrap(values: Sequence[float], *, seed: int = 0, level: float = 0.95) -> Estimate:
    """Mean and percentile-bootstrap interval of `values` (NaN-free)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    if x.size == 1:
        return Estimate(float(x[0]), float(x[0]), float(x[0]), 1)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(RESAMPLES, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(float(x.mean()), float(low), float(high), int(x.size))


def paired_difference(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> Estimate:
    """Mean of b - a over the same questions, with its interval: a change is significant when
    the interval leaves out 0."""
    if len(a) != len(b):
        raise ValueError("paired scores need the same questions")
    return bootstrap([y - x for x, y in zip(a, b, strict=True)], seed=seed)


def difference(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> Estimate:
    """Mean of b minus mean of a over two independent samples, each resampled on its own."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    diffs = (y[rng.integers(0, y.size, size=(RESAMPLES, y.size))].mean(axis=1)
             - x[rng.integers(0, x.size, size=(RESAMPLES, x.size))].mean(axis=1))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return Estimate(float(y.mean() - x.mean()), float(low), float(high), int(y.size))


def accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float:
    if not truth:
        return float("nan")
    return sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth)


def cohen_kappa(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """Agreement beyond chance: 1 perfect, 0 what chance gives, below 0 worse than chance."""
    n = len(truth)
    if n == 0:
        return float("nan")
    labels = sorted(set(truth) | set(predicted))
    observed = accuracy(truth, predicted)
    expected = sum((list(truth).count(c) / n) * (list(predicted).count(c) / n) for c in labels)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)
