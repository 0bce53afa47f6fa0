"""Writes the Grafana dashboards in deploy/grafana/dashboards/ from the panel lists below.

The JSON files are committed (Grafana's provisioning reads them as they are); this script
is their source, so a panel is changed here and the files rebuilt:

    python deploy/grafana/build.py

tests/test_monitoring.py checks that the files match this script and evaluates every
panel's query against a real Prometheus scraping a live server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
RATE = "$__rate_interval"
APP = 'app=~"$app"'
ANSWER_ROUTES = 'route=~"/v1/chat/completions|/v1/completions|/v1/apps/.*/ask"'

# (title, unit, [(legend, PromQL)]) per panel; each dashboard a list of panels.
Panel = tuple[str, str, list[tuple[str, str]]]


def quantiles(metric: str, selector: str, qs: tuple[float, ...] = (0.5, 0.95, 0.99),
              by: str = "le") -> list[tuple[str, str]]:
    return [(f"p{int(q * 100)}", f"histogram_quantile({q}, sum by ({by}) "
                                 f"(rate({metric}_bucket{{{selector}}}[{RATE}])))") for q in qs]


DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "overview": ("Alicerce: overview", [
        ("Requests per second by route", "reqps", [
            ("{{route}}", f"sum by (route) (rate(alicerce_requests_total{{{APP}}}[{RATE}]))")]),
        ("Answer latency", "s", quantiles(
            "alicerce_request_seconds", f"{APP}, {ANSWER_ROUTES}")),
        ("Time to first token", "s", quantiles(
            "alicerce_time_to_first_token_seconds", APP, (0.5, 0.95))),
        ("Server errors (5xx share)", "percentunit", [
            ("5xx", f'(sum(rate(alicerce_requests_total{{{APP}, status=~"5.."}}[{RATE}])) '
                    f"or vector(0)) / sum(rate(alicerce_requests_total{{{APP}}}[{RATE}]))")]),
        ("Responses by status", "reqps", [
            ("{{status}}", f"sum by (status) (rate(alicerce_requests_total{{{APP}}}[{RATE}]))")]),
        ("Tokens per second", "short", [
            ("{{direction}}", f"sum by (direction) (rate(alicerce_tokens_total{{{APP}}}"
                              f"[{RATE}]))")]),
        ("Model queue", "short", [
            ("running", "sum(alicerce_queue_running)"),
            ("waiting", "sum(alicerce_queue_depth)"),
            ("capacity", "sum(alicerce_queue_capacity)")]),
        ("Refused requests", "reqps", [
            ("{{reason}}", f"sum by (reason) (rate(alicerce_rate_limited_total[{RATE}]))")]),
    ]),
    "quality": ("Alicerce: quality", [
        ("Answers by outcome", "short", [
            ("{{outcome}}", f"sum by (outcome) (rate(alicerce_answers_total{{{APP}}}"
                            f"[{RATE}]))")]),
        ("Abstention rate by app version", "percentunit", [
            ("{{app}}@{{version}}",
             f'sum by (app, version) (rate(alicerce_answers_total{{{APP}, outcome="abstained"}}'
             f"[{RATE}])) / sum by (app, version) (rate(alicerce_answers_total{{{APP}}}"
             f"[{RATE}]))")]),
        ("Feedback", "short", [
            ("{{score}}", f"sum by (score) (increase(alicerce_feedback_total{{{APP}}}"
                          f"[{RATE}]))")]),
        ("Share of thumbs down", "percentunit", [
            ("down", f'sum(rate(alicerce_feedback_total{{{APP}, score="down"}}[1h])) / '
                     f'sum(rate(alicerce_feedback_total{{{APP}, score=~"up|down"}}[1h]))')]),
        ("Mean star rating", "short", [
            ("rating", f"sum(rate(alicerce_feedback_rating_sum{{{APP}}}[1h])) / "
                       f"sum(rate(alicerce_feedback_rating_count{{{APP}}}[1h]))")]),
        ("Guard blocks by rail", "short", [
            ("{{stage}}:{{rail}}", f'sum by (stage, rail) (increase(alicerce_guard_verdicts_total'
                                   f'{{{APP}, action="block"}}[{RATE}]))')]),
        ("Guard verdicts by action", "short", [
            ("{{action}}", f"sum by (action) (increase(alicerce_guard_verdicts_total{{{APP}}}"
                           f"[{RATE}]))")]),
        ("Guard latency p95 by rail", "s", quantiles(
            "alicerce_guard_seconds", "", (0.95,), "le, rail")),
        ("Live groundedness and relevance (continuous evaluation)", "percentunit", [
            ("{{app}}@{{version}} {{metric}}",
             f'alicerce_eval_score{{{APP}, kind="online", metric=~"triad.groundedness|'
             f'triad.answer_relevance|triad.context_relevance"}}')]),
        ("Offline evaluation scores by app version", "short", [
            ("{{app}}@{{version}} {{metric}}",
             f'alicerce_eval_score{{{APP}, kind="run"}}')]),
    ]),
    "retrieval": ("Alicerce: retrieval", [
        ("Best passage similarity", "short", quantiles(
            "alicerce_retrieval_top_score", APP, (0.1, 0.5, 0.9))),
        ("Passages per answer", "short", quantiles(
            "alicerce_retrieval_passages", APP, (0.5, 0.9))),
        ("Questions with nothing retrieved", "percentunit", [
            ("empty", f"sum(rate(alicerce_retrieval_empty_total{{{APP}}}[{RATE}])) / "
                      f"sum(rate(alicerce_answers_total{{{APP}}}[{RATE}]))")]),
        ("Answer cache hit ratio", "percentunit", [
            ("{{kind}}", f'sum by (kind) (rate(alicerce_cache_total{{result="hit"}}[{RATE}])) / '
                         f"sum by (kind) (rate(alicerce_cache_total[{RATE}]))")]),
    ]),
    "drift": ("Alicerce: drift", [
        ("Drift detected (newest run)", "short", [
            ("{{app}} {{side}}", f"max by (app, side) (alicerce_drift_detected{{{APP}}})")]),
        ("Meaning: MMD²", "short", [
            ("{{app}} {{side}}", f'alicerce_drift_statistic{{{APP}, test="embedding_mmd"}}')]),
        ("Meaning: permutation p-value", "short", [
            ("{{app}} {{side}}", f'alicerce_drift_p_value{{{APP}, test="embedding_mmd"}}')]),
        ("Length shift (PSI)", "short", [
            ("{{app}} {{side}} {{test}}",
             f'alicerce_drift_statistic{{{APP}, test=~"chars_psi|tokens_psi"}}')]),
        ("Vocabulary and topics", "short", [
            ("{{app}} {{side}} {{test}}",
             f'alicerce_drift_statistic{{{APP}, test=~"oov_rate|topic_shift|centroid_cosine"}}')]),
        ("Time since the last drift run", "s", [
            ("{{app}}", f"time() - alicerce_drift_last_run_timestamp_seconds{{{APP}}}")]),
    ]),
    "resources": ("Alicerce: resources", [
        ("CPU (cores used)", "short", [
            ("{{instance}}", f'rate(process_cpu_seconds_total{{job="alicerce"}}[{RATE}])')]),
        ("Resident memory", "bytes", [
            ("{{instance}}", 'process_resident_memory_bytes{job="alicerce"}')]),
        ("Open files", "short", [("{{instance}}", 'process_open_fds{job="alicerce"}')]),
        ("Model queue utilisation", "percentunit", [
            ("{{instance}}", "(alicerce_queue_running + alicerce_queue_depth) / "
                             "alicerce_queue_capacity")]),
        ("Traces not stored", "short", [
            ("{{instance}}", f"increase(alicerce_trace_failures_total[{RATE}])")]),
        ("Scrape up", "short", [("{{instance}}", 'up{job="alicerce"}')]),
    ]),
}


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    items = []
    for i, (name, unit, targets) in enumerate(panels):
        items.append({
            "id": i + 1, "type": "timeseries", "title": name,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
            "targets": [{"refId": chr(65 + j), "expr": expr, "legendFormat": legend,
                         "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                        for j, (legend, expr) in enumerate(targets)]})
    return {
        "uid": f"alicerce-{uid}", "title": title, "tags": ["alicerce"], "schemaVersion": 39,
        "version": 1, "editable": True, "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus",
             "label": "Prometheus"},
            {"name": "app", "type": "query", "label": "App", "includeAll": True,
             "multi": True, "allValue": ".*", "refresh": 2,
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": {"query": "label_values(alicerce_requests_total, app)",
                       "refId": "apps"},
             "definition": "label_values(alicerce_requests_total, app)"}]},
        "panels": items}


def build() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2) + "\n"
            for uid, (title, panels) in DASHBOARDS.items()}


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for name, text in build().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(OUT / name)
