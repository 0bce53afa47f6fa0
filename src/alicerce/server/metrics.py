"""Prometheus metrics of one server (its own registry, so two apps in a process never clash).

Names follow Prometheus conventions (`_total` counters, `_seconds` histograms); `app` is the
app or raw model a request used, `route` the route template (never the raw path, whose ids
would explode the label set).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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

    def depth(self, running: int, waiting: int) -> None:
        self.queue_running.set(running)
        self.queue_waiting.set(waiting)

    def render(self) -> bytes:
        return generate_latest(self.registry)
