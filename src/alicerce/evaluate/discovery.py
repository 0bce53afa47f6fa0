"""Model discovery: the same dataset answered by each candidate model, with quality, latency,
speed, memory and cost side by side, so a user can choose a base model on their own data.

Answers are not taken from the memo here (the timings must be this run's). Memory is the
growth of this process's resident set while the model loaded and answered (llama.cpp maps
the weights, so it is mostly the model's pages); cost is CPU seconds per 1,000 answers on
this machine, plus money when a [models.NAME] entry gives prices per million tokens.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from alicerce.datasets import Dataset
from alicerce.evaluate.runner import Progress

if TYPE_CHECKING:
    from alicerce.platform import Alicerce


@dataclass(frozen=True)
class ModelReport:
    model: str
    run_id: str
    quality: dict[str, float]
    latency_p50_ms: float
    latency_p95_ms: float
    tokens_per_s: float
    rss_growth_mb: float
    cpu_s_per_1k: float
    price_per_1k: float | None
    failed: int
    notes: list[str] = field(default_factory=list)


def _rss_mb() -> float:
    """Resident set size of this process (Linux /proc; 0 where there is none)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return 0.0
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def compare_models(alc: Alicerce, app: str, dataset: Dataset, models: Sequence[str],
                   metrics: Sequence[str] = ("answer",), *, judge_model: str | None = None,
                   progress: Progress | None = None) -> list[ModelReport]:
    out = []
    for name in models:
        alc.generator(name)  # an unknown name fails here, before any work
        rss, cpu = _rss_mb(), time.process_time()
        run = alc.evals.run(app, dataset, metrics, judge_model=judge_model, cache=False,
                            model=name, progress=progress)
        cpu_used = time.process_time() - cpu
        answered = [r for r in run.results if "latency_ms" in r.details]
        lat = sorted(r.details["latency_ms"] for r in answered) or [0.0]
        tokens = sum(r.details.get("tokens", 0) for r in answered)
        prompt_tokens = sum(r.details.get("prompt_tokens", 0) for r in answered)
        entry = alc.settings.models.get(name)
        price = None
        if entry and entry.price_input_per_mtok is not None and answered:
            price = (prompt_tokens * entry.price_input_per_mtok + tokens *
                     (entry.price_output_per_mtok or 0.0)) / 1e6 / len(answered) * 1000
        out.append(ModelReport(
            name, run.id, {m: e.mean for m, e in run.summary.items()},
            statistics.median(lat), lat[min(len(lat) - 1, int(0.95 * len(lat)))],
            tokens / (sum(lat) / 1000) if sum(lat) else 0.0, _rss_mb() - rss,
            cpu_used / max(1, len(answered)) * 1000, price, run.failed,
            ["CPU time includes judging"] if judge_model or {"triad", "judge"} & set(metrics)
            else []))
    return out
