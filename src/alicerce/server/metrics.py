"""Prometheus metrics of one server (its own registry, so two apps in a process never clash).

Names follow Prometheus conventions (`_total` counters, `_seconds` histograms); `app` is the
app or raw model a request used, `route` the route template (never the raw path, whose ids
would explode the label set).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from alicerce.types import Answer

LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
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
        self.cache = Counter("alicerce_cache_total", "Inference cache lookups",
                             ["kind", "result"], registry=r)
        self.errors = Counter("alicerce_errors_total", "Errors by type", ["type"], registry=r)
        self.rate_limited = Counter("alicerce_rate_limited_total",
                                    "Requests refused by a per-key limit or a full queue",
                                    ["reason"], registry=r)
        self.feedback = Counter("alicerce_feedback_total",
                                "Feedback by kind: up, down, rating, comment",
                                ["app", "score"], registry=r)
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

    def guarded(self, app: str, answer: Answer) -> None:
        for v in answer.guards:
            self.guard_verdicts.labels(app, v["stage"], v["rail"], v["action"]).inc()
            self.guard_latency.labels(v["rail"]).observe(v["latency_ms"] / 1000)
            if v.get("error"):
                self.guard_failures.labels(app, v["rail"], v["action"]).inc()

    def depth(self, running: int, waiting: int) -> None:
        self.queue_running.set(running)
        self.queue_waiting.set(waiting)

    def render(self) -> bytes:
        return generate_latest(self.registry)
