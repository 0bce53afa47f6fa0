"""Drift and skew on text: is a current sample of inputs (or outputs) distributed like a
baseline sample?

Four views, each answering a different question a user asks when quality moves:
- embeddings: is the *meaning* different? Maximum mean discrepancy (RBF kernel, median
  bandwidth) with a permutation p-value, and the cosine distance between the two centroids;
- length: are texts longer or shorter? Two-sample KS test and the population stability
  index (PSI) on characters and on word tokens;
- vocabulary: are people using words the baseline never saw? Out-of-vocabulary rate against
  the rate expected from the baseline's own halves, and the new frequent terms;
- topics: *which* themes grew? k-means clusters of the baseline embeddings, each cluster's
  share before and now, texts far from every cluster counted as "new", with examples.

The side is flagged when a test's p-value is below alpha divided by the number of tests
(Bonferroni), so adding views does not add false alarms. KS and k-means come from scipy;
MMD and PSI are a few lines of numpy each.
"""

from __future__ import annotations

import math
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.cluster.vq import kmeans2
from scipy.stats import ks_2samp

WORD = re.compile(r"\w+", re.UNICODE)
PERMUTATIONS = 1000
PSI_BINS = 10
PSI_WARN = 0.2  # the usual reading: < 0.1 stable, 0.1-0.2 moderate, > 0.2 shifted
PSI_MIN_N = 100  # ten quantile bins need about ten texts each before PSI means anything
NEW_TOPIC_QUANTILE = 0.95  # farther from every centroid than 95% of the baseline: "new"


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


@dataclass(frozen=True)
class Test:
    """One statistic: its value, p-value where it has one, and whether it fired."""

    name: str
    value: float
    p_value: float | None = None
    flagged: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Topic:
    cluster: int  # -1: texts far from every baseline cluster
    terms: list[str]
    baseline_share: float
    current_share: float
    examples: list[str]


@dataclass(frozen=True)
class SideReport:
    """Drift of one side (inputs or outputs) between two samples."""

    side: str
    n_baseline: int
    n_current: int
    drifted: bool
    tests: list[Test]
    topics: list[Topic]
    new_terms: list[tuple[str, int]]
    lengths: dict[str, dict[str, list[float]]]  # histogram per feature, for plots

    def test(self, name: str) -> Test | None:
        return next((t for t in self.tests if t.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(side: str, baseline: Sequence[str], current: Sequence[str],
            base_vectors: np.ndarray, cur_vectors: np.ndarray, *, alpha: float = 0.01,
            seed: int = 0) -> SideReport:
    """All four views of one side. Vectors are L2-normalised rows for (a sample of) the
    texts, in the same order as the first len(vectors) texts."""
    rng = np.random.default_rng(seed)
    tests: list[Test] = []
    mmd, p = mmd_test(base_vectors, cur_vectors, rng)
    tests.append(Test("embedding_mmd", mmd, p))
    tests.append(Test("centroid_cosine", centroid_distance(base_vectors, cur_vectors)))
    lengths: dict[str, dict[str, list[float]]] = {}
    base_words, cur_words = [words(t) for t in baseline], [words(t) for t in current]
    for feature, b_len, c_len in (
            ("chars", [len(t) for t in baseline], [len(t) for t in current]),
            ("tokens", [len(w) for w in base_words], [len(w) for w in cur_words])):
        b, c = np.array(b_len, dtype=float), np.array(c_len, dtype=float)
        with warnings.catch_warnings():  # "exact calculation unsuccessful": asymptotic used
            warnings.simplefilter("ignore", RuntimeWarning)
            ks = ks_2samp(b, c)
        tests.append(Test(f"{feature}_ks", float(ks.statistic), float(ks.pvalue),
                          detail={"baseline_mean": float(b.mean()),
                                  "current_mean": float(c.mean())}))
        psi_value = psi(b, c)
        enough = min(len(b), len(c)) >= PSI_MIN_N
        tests.append(Test(f"{feature}_psi", psi_value, flagged=enough and psi_value > PSI_WARN,
                          detail={} if enough else {"note": f"under {PSI_MIN_N} texts a side: "
                                                            "too noisy to flag"}))
        lengths[feature] = histogram(b, c)
    oov, expected, new_terms = _vocabulary(base_words, cur_words)
    tests.append(Test("oov_rate", oov, detail={"expected": expected}))
    topics, moved = topic_shift(baseline, current, base_vectors, cur_vectors, seed)
    tests.append(Test("topic_shift", moved))
    tested = [t for t in tests if t.p_value is not None]
    limit = alpha / max(1, len(tested))
    tests = [Test(t.name, t.value, t.p_value, t.flagged or (
        t.p_value is not None and t.p_value < limit), t.detail) for t in tests]
    drifted = any(t.flagged for t in tests if t.p_value is not None)
    return SideReport(side, len(baseline), len(current), drifted, tests, topics,
                      new_terms, lengths)


# -- embeddings ---------------------------------------------------------------------------
def mmd_test(x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
             permutations: int = PERMUTATIONS) -> tuple[float, float]:
    """Unbiased MMD² with an RBF kernel (bandwidth: median pairwise distance of the pooled
    sample) and its permutation p-value (with the +1 correction, never 0).

    Every permutation's statistic comes from one matrix product of the kernel with the
    permutations' membership columns, so 1,000 permutations of 500 + 500 texts cost well
    under a second."""
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        return float("nan"), 1.0
    pooled = np.vstack([x, y]).astype(np.float64)
    sq = np.sum(pooled ** 2, axis=1)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2 * pooled @ pooled.T, 0.0)
    upper = dist2[np.triu_indices(n + m, 1)]
    bandwidth2 = float(np.median(upper[upper > 0])) if np.any(upper > 0) else 1.0
    k = np.exp(-dist2 / bandwidth2)
    np.fill_diagonal(k, 0.0)

    def statistics(z: np.ndarray) -> np.ndarray:  # z: (n+m, B) 1 = in the first sample
        kz = k @ z
        kxx = np.sum(z * kz, axis=0)
        kxy = np.sum((1 - z) * kz, axis=0)
        kyy = np.sum((1 - z) * (k @ (1 - z)), axis=0)
        out: np.ndarray = kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2 * kxy / (n * m)
        return out
    first = np.zeros((n + m, 1))
    first[:n] = 1
    observed = float(statistics(first)[0])
    hits, done = 0, 0
    while done < permutations:
        batch = min(250, permutations - done)
        z = np.zeros((n + m, batch))
        for j in range(batch):
            z[rng.permutation(n + m)[:n], j] = 1
        hits += int(np.sum(statistics(z) >= observed))
        done += batch
    return observed, (hits + 1) / (permutations + 1)


def centroid_distance(x: np.ndarray, y: np.ndarray) -> float:
    a, b = x.mean(axis=0), y.mean(axis=0)
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 0.0 if denom == 0 else 1.0 - float(a @ b) / denom


# -- lengths ------------------------------------------------------------------------------
def psi(baseline: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index over the baseline's quantile bins."""
    edges = np.unique(np.quantile(baseline, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:
        edges = np.array([baseline.min() - 0.5, baseline.max() + 0.5])
    edges[0], edges[-1] = -np.inf, np.inf
    b = np.histogram(baseline, edges)[0] / len(baseline)
    c = np.histogram(current, edges)[0] / len(current)
    b, c = np.clip(b, 1e-4, None), np.clip(c, 1e-4, None)
    return float(np.sum((c - b) * np.log(c / b)))


def histogram(b: np.ndarray, c: np.ndarray, bins: int = 20) -> dict[str, list[float]]:
    hi = float(np.quantile(np.concatenate([b, c]), 0.99)) or 1.0
    edges = np.linspace(0, hi, bins + 1)
    return {"edges": edges.tolist(),
            "baseline": (np.histogram(np.clip(b, 0, hi), edges)[0] / len(b)).tolist(),
            "current": (np.histogram(np.clip(c, 0, hi), edges)[0] / len(c)).tolist()}


# -- vocabulary ---------------------------------------------------------------------------
def vocabulary(baseline: Sequence[str], current: Sequence[str], top: int = 15
               ) -> tuple[float, float, list[tuple[str, int]]]:
    """(OOV rate of the current tokens, the rate expected without drift, new frequent
    terms). The expectation compares the baseline's second half with its first: a small
    baseline has a high OOV rate against anything, drift or not."""
    return _vocabulary([words(t) for t in baseline], [words(t) for t in current], top)


def _vocabulary(base: Sequence[list[str]], current: Sequence[list[str]], top: int = 15
                ) -> tuple[float, float, list[tuple[str, int]]]:
    vocab = {w for ws in base for w in ws}
    cur = Counter(w for ws in current for w in ws)
    total = sum(cur.values())
    oov = sum(n for w, n in cur.items() if w not in vocab) / total if total else 0.0
    half = len(base) // 2
    first = {w for ws in base[:half] for w in ws}
    second = [w for ws in base[half:] for w in ws]
    expected = sum(w not in first for w in second) / len(second) if second and first else 0.0
    floor = max(2, math.ceil(0.002 * total))
    new = sorted(((w, n) for w, n in cur.items() if w not in vocab and n >= floor
                  and len(w) > 2 and not w.isdigit()), key=lambda x: (-x[1], x[0]))
    return oov, expected, new[:top]


# -- topics -------------------------------------------------------------------------------
def topic_shift(baseline: Sequence[str], current: Sequence[str], base_vectors: np.ndarray,
                cur_vectors: np.ndarray, seed: int = 0) -> tuple[list[Topic], float]:
    """Clusters of the baseline and how the current sample spreads over them, with the
    total variation distance between the two shares (0 = same mix, 1 = disjoint)."""
    n = len(base_vectors)
    k = int(min(12, max(2, round(math.sqrt(n / 2)))))
    if n < 2 * k:
        return [], 0.0
    centroids, labels = kmeans2(base_vectors.astype(np.float64), k, seed=seed, minit="++")
    own = np.linalg.norm(base_vectors - centroids[labels], axis=1)
    far = float(np.quantile(own, NEW_TOPIC_QUANTILE))
    d = np.linalg.norm(cur_vectors[:, None, :] - centroids[None, :, :], axis=2)
    cur_labels = d.argmin(axis=1)
    cur_labels[d.min(axis=1) > far] = -1
    ids = [*range(k), -1]
    b_share = {i: float(np.mean(labels == i)) for i in range(k)} | {-1: 0.0}
    c_share = {i: float(np.mean(cur_labels == i)) for i in ids}
    moved = 0.5 * sum(abs(c_share[i] - b_share[i]) for i in ids)
    df = _df([*baseline[:n], *current[:len(cur_vectors)]])
    topics = []
    for i in ids:
        members = [t for t, lab in zip(current, cur_labels, strict=False) if lab == i]
        source = members if i == -1 else [t for t, lab in zip(baseline, labels, strict=False)
                                          if lab == i]
        topics.append(Topic(i, _terms(source, df), b_share[i], c_share[i], members[:3]))
    topics.sort(key=lambda t: -(t.current_share - t.baseline_share))
    return topics, moved


def _df(texts: Sequence[str]) -> tuple[Counter[str], int]:
    return Counter(w for t in texts for w in set(words(t))), len(texts)


def _terms(texts: Sequence[str], df: tuple[Counter[str], int], n: int = 5) -> list[str]:
    """The words that mark a cluster: frequent in it, rare overall (tf-idf), so the label
    is "reembolso, comprovantes", not "qual, para"."""
    overall, total = df
    counts = Counter(w for t in texts for w in set(words(t)) if len(w) > 2)
    ranked = sorted(counts, key=lambda w: -counts[w] * math.log((total + 1) /
                                                                (overall[w] + 1)))
    return ranked[:n]
