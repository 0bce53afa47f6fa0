"""Console pages for operations: live figures from the metrics, batch jobs with progress,
tuning runs (loss curves) and adapters, API keys (a new key's secret is shown once) and the
audit log."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from prometheus_client.parser import text_string_to_metric_families

from alicerce.server import routes_chains, routes_manage
from alicerce.server.console.auth import signed_in
from alicerce.server.console.render import page, render
from alicerce.server.deps import Svc
from alicerce.server.service import Service
from alicerce.server.wire_manage import KeyRequest

router = APIRouter(prefix="/console", include_in_schema=False)
Csrf = Annotated[str, Form(max_length=200)]
Scope = Literal["ask", "ingest", "admin", "read", "models", "unguarded"]


def _figures(svc: Service) -> dict[str, float]:
    """Totals from the metrics the server exports (what Prometheus would scrape)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(svc.metrics.render().decode()):
        for s in family.samples:
            if s.name in ("alicerce_requests_total", "alicerce_answers_total",
                          "alicerce_errors_total", "alicerce_tokens_total",
                          "alicerce_rate_limited_total"):
                out[s.name] = out.get(s.name, 0.0) + s.value
            elif s.name == "alicerce_queue_depth":
                out[s.name] = s.value
    return out


@router.get("/ops")
@page
async def ops(request: Request, svc: Svc) -> Response:
    s = signed_in(request, svc)
    batches = (await routes_chains.list_batches(svc, s.key))["data"]
    adapters = (await routes_manage.list_adapters(svc, s.key))["data"]
    runs: list[dict[str, Any]] = []
    if s.key.sees_all:
        runs = (await routes_manage.list_tune_runs(svc, s.key, limit=20))["data"]
    curves = {r["id"]: {"x": [h.get("step", i) for i, h in enumerate(r["history"])],
                        "y": [h.get("loss") for h in r["history"]],
                        "y2": [h.get("eval_loss") for h in r["history"]]}
              for r in runs if r["history"]}
    return render(request, "ops.html", figures=_figures(svc), batches=batches,
                  adapters=adapters, tune_runs=runs, curves=curves)


@router.get("/ops/keys")
@page
async def keys(request: Request, svc: Svc) -> Response:
    s = signed_in(request, svc)
    listed = (await routes_manage.list_keys(svc, s.key))["data"]
    log = (await routes_manage.audit(svc, s.key, limit=100))["data"]
    return render(request, "keys.html", keys=listed, log=log, created=None)


@router.post("/ops/keys")
@page
async def create_key(request: Request, svc: Svc, name: Annotated[str, Form(max_length=64)],
                     scopes: Annotated[list[Scope], Form()],
                     collections: Annotated[str, Form(max_length=2000)] = "",
                     rpm: Annotated[int, Form(ge=1, le=1_000_000)] = 60,
                     csrf: Csrf = "") -> Response:
    """The new key's secret is in this page only (it is stored as a hash)."""
    s = signed_in(request, svc, csrf, change=True)
    colls = [c.strip() for c in collections.split(",") if c.strip()] or None
    made = await routes_manage.create_key(
        KeyRequest.model_validate({"name": name, "scopes": scopes, "collections": colls,
                                   "rpm": rpm}), svc, s.key)
    listed = (await routes_manage.list_keys(svc, s.key))["data"]
    log = (await routes_manage.audit(svc, s.key, limit=100))["data"]
    return render(request, "keys.html", 201, keys=listed, log=log, created=made)


@router.post("/ops/keys/{key_id}/revoke")
@page
async def revoke_key(request: Request, key_id: str, svc: Svc, csrf: Csrf = "") -> Response:
    s = signed_in(request, svc, csrf, change=True)
    await routes_manage.revoke_key(key_id, svc, s.key)
    return RedirectResponse("/console/ops/keys", 303)
