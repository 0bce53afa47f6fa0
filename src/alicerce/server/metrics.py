"""Prometheus metrics of one server (its own registry, so two apps in a process never clash).

Names follow Prometheus conventions (`_total` counters, `_seconds` histograms); `app` is the
app or raw model a request used, `route` the route template (never the raw path, whose ids
would explode the label set), `version` the app version that answered ("" for a bare
collection). The catalogue, with what each is for, is docs/monitoring.md.

Drift and evaluation results are computed by other processes (`alicerce drift`, `alicerce
eval run`, `alicerce monitor run`) and stored in the home; `StoredResults` reads the latest
of them at scrape time, so they are exported by whichever server serves the home.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import (
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from alicerce.types import Answer
from alicerce.version import __version__

log = logging.getLogger("alicerce.server")
LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)
SIMILARITY = (0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)
STARS = (1, 2, 3, 4, 5)
OUTCOMES = ("answered", "abstained", "blocked")


class Metrics:
    def __init__(self, stored: Collector | None = None) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)  # process_cpu_seconds_total, resident memory, fds
        r.register(PLATFORM_COLLECTOR)
        Info("alicerce", "The server's software version", registry=r).info(
            {"version": __version__})
        if stored is not None:
            r.register(stored)
        self.requests = Counter("alicerce_requests_total", "HTTP requests by route and status",
                                ["route", "app", "status"], registry=r)
        self.latency = Histogram("alicerce_request_seconds", "Request latency (whole response)",
                                 ["route", "app"], buckets=LATENCY, registry=r)
        self.ttft = Histogram("alicerce_time_to_first_token_seconds",
                              "Time from request to the first generated text",
                              ["app"], buckets=LATENCY, registry=r)
        self.tokens = Counter("alicerce_tokens_total", "Tokens read (in) and generated (out)",
                              ["app", "direction"], registry=r)
        self.queue_running = Gauge("alicerce_queue_running", "Model requests running",
                                   registry=r)
        self.queue_waiting = Gauge("alicerce_queue_depth", "Model requests waiting for a slot",
                                   registry=r)
        self.queue_capacity = Gauge("alicerce_queue_capacity", "Model requests that may run "
                                    "or wait at once (llm_parallel + queue_size)", registry=r)
        self.cache = Counter("alicerce_cache_total", "Inference cache lookups",
                             ["kind", "result"], registry=r)
        for kind in ("exact", "semantic"):
            for result in ("hit", "miss"):
                self.cache.labels(kind, result)
        self.errors = Counter("alicerce_errors_total", "Errors by type", ["type"], registry=r)
        self.rate_limited = Counter("alicerce_rate_limited_total",
                                    "Requests refused by a per-key limit or a full queue",
                                    ["reason"], registry=r)
        for reason in ("key", "queue"):  # series from the start: ratios and alerts see 0
            self.rate_limited.labels(reason)
        self.feedback = Counter("alicerce_feedback_total",
                                "Feedback by kind: up, down, rating, comment",
                                ["app", "score"], registry=r)
        self.ratings = Histogram("alicerce_feedback_rating", "Star ratings given (1-5)",
                                 ["app"], buckets=STARS, registry=r)
        self.answers = Counter(
            "alicerce_answers_total", "Answers by outcome: answered, abstained, blocked",
            ["app", "version", "outcome"], registry=r)
        self.top_score = Histogram(
            "alicerce_retrieval_top_score", "Dense similarity of the best retrieved passage",
            ["app"], buckets=SIMILARITY, registry=r)
        self.retrieved = Histogram(
            "alicerce_retrieval_passages", "Passages an answer was given",
            ["app"], buckets=(0, 1, 2, 3, 4, 6, 8, 12, 20), registry=r)
        self.empty = Counter("alicerce_retrieval_empty_total",
                             "Questions for which retrieval found nothing", ["app"], registry=r)
        self.trace_failures = Counter("alicerce_trace_failures_total",
                                      "Traces not stored (write error or full queue)",
                                      registry=r)

        self.guard_verdicts = Counter(
            "alicerce_guard_verdicts_total", "Guard rail verdicts by stage, rail and action",
            ["app", "stage", "rail", "action"], registry=r)
        self.guard_failures = Counter(
            "alicerce_guard_failures_total", "Rails that failed and fell back to on_error",
            ["app", "rail", "fallback"], registry=r)
        self.guard_latency = Histogram("alicerce_guard_seconds", "Time per rail check",
                                       ["rail"], buckets=LATENCY, registry=r)

    def answered(self, app: str, version: int | None, answer: Answer) -> None:
        """Everything an answer tells about quality: outcome, retrieval, guard verdicts.
        Every outcome's series starts at 0, so ratios exist before the first abstention."""
        outcome = "blocked" if answer.blocked else "abstained" if answer.abstained \
            else "answered"
        label = "" if version is None else str(version)
        for name in OUTCOMES:
            self.answers.labels(app, label, name)
        self.empty.labels(app)
        for kind in ("up", "down"):
            self.feedback.labels(app, kind)
        self.answers.labels(app, label, outcome).inc()
        self.retrieved.labels(app).observe(len(answer.chunks))
        dense = [h.scores["dense"] for h in answer.chunks if "dense" in h.scores]
        if dense:
            self.top_score.labels(app).observe(max(dense))
        elif not answer.chunks and not answer.blocked:
            self.empty.labels(app).inc()
        self.verdicts(app, answer.guards)

    def verdicts(self, app: str, verdicts: Sequence[dict[str, Any]]) -> None:
        for v in verdicts:
            self.guard_verdicts.labels(app, v["stage"], v["rail"], v["action"]).inc()
            self.guard_latency.labels(v["rail"]).observe(v["latency_ms"] / 1000)
            if v.get("error"):
                self.guard_failures.labels(app, v["rail"], v["action"]).inc()

    def depth(self, running: int, waiting: int) -> None:
        self.queue_running.set(running)
        self.queue_waiting.set(waiting)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StoredResults(Collector):
    """Gauges of the newest drift run per app and the newest evaluation scores per app
    version, read from the home when Prometheus scrapes (at most every `every_s`)."""

    def __init__(self, read: Callable[[], list[Metric]], every_s: float = 10.0) -> None:
        self._read, self._every = read, every_s
        self._at, self._cached = 0.0, list[Metric]()

    def collect(self) -> Iterator[Metric]:
        if time.monotonic() - self._at > self._every:
            try:
                self._cached = self._read()
            except Exception:  # a locked or damaged store must not fail the whole scrape
                log.exception("stored drift/evaluation results could not be read")
            self._at = time.monotonic()
        yield from self._cached

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked: families vary with what the home holds


def gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)
