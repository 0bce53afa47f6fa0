"""Console pages for evaluation: runs (with a metric over app versions and a score
distribution), two runs compared row by row with links to both traces, datasets with
their versions and an upload form, and the review queue that turns rated-down answers
into a golden dataset."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response

from alicerce.evaluate import fairness_probes
from alicerce.evaluate.dataset_registry import check_name
from alicerce.server import routes_evals
from alicerce.server.console.auth import signed_in
from alicerce.server.console.render import page, render
from alicerce.server.deps import Svc
from alicerce.server.wire_manage import EvalRequest, ReviewItem, ReviewRequest

router = APIRouter(prefix="/console", include_in_schema=False)
Csrf = Annotated[str, Form(max_length=200)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
RunKind = Literal["", "run", "pairwise", "redteam", "online", "fairness"]


def _series(runs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """A metric's mean per run of `kind` run, oldest first: what the chart draws."""
    points = [r for r in reversed(runs) if metric in r["summary"]]
    return {"metric": metric, "x": list(range(1, len(points) + 1)),
            "labels": [f"{r['app']}@{r['app_version'] or '-'}" for r in points],
            "y": [r["summary"][metric]["mean"] for r in points],
            "low": [r["summary"][metric]["low"] for r in points],
            "high": [r["summary"][metric]["high"] for r in points]}


def _hist(values: list[float], bins: int = 10) -> dict[str, Any] | None:
    """Counts of a metric's scores in `bins` equal bins between its lowest and highest."""
    if not values:
        return None
    lo, hi = min(values), max(values)
    counts = [0] * bins
    for v in values:
        counts[min(int((v - lo) / ((hi - lo) or 1) * bins), bins - 1)] += 1
    return {"lo": lo, "hi": hi, "counts": counts, "top": max(counts)}


@router.get("/evals")
@page
async def runs(request: Request, svc: Svc, app: Annotated[str, Query(max_length=200)] = "",
               kind: RunKind = "", metric: Annotated[str, Query(max_length=100)] = ""
               ) -> Response:
    s = signed_in(request, svc)
    data = (await routes_evals.list_runs(svc, s.key, app=app or None, kind=kind or None,
                                         limit=200))["data"]
    metrics = sorted({m for r in data for m in r["summary"]})
    chosen = metric if metric in metrics else next(
        (m for m in ("answer.f1", "retrieval.hit_rate") if m in metrics),
        metrics[0] if metrics else "")
    chart = _series([r for r in data if r["kind"] == "run"], chosen) if chosen else None
    jobs = (await routes_evals.list_jobs(svc, s.key, limit=10))["data"] \
        if s.key.sees_all else []
    if request.headers.get("hx-target") == "eval-jobs":
        return render(request, "eval_jobs.html", jobs=jobs)
    refs = [f"{a}@{v.version}" for a in svc.apps(s.key) if svc.alc.apps.exists(a)
            for v in svc.alc.apps.versions(a)]
    golden = [d["ref"] for d in (await routes_evals.list_datasets(svc, s.key))["data"]] \
        if s.key.sees_all else []
    return render(request, "evals.html", runs=data, metrics=metrics, metric=chosen,
                  chart=chart, filters={"app": app, "kind": kind}, apps=svc.apps(s.key),
                  jobs=jobs, app_refs=refs, golden=golden,
                  fairness_attributes=fairness_probes.attributes())


@router.post("/evals")
@page
async def start(request: Request, svc: Svc, app: Annotated[str, Form(max_length=200)],
                dataset: Annotated[str, Form(max_length=80)],
                metrics: Annotated[list[str], Form(max_length=5)],
                kind: Annotated[Literal["run", "fairness"], Form()] = "run",
                attributes: Annotated[list[str] | None, Form(max_length=10)] = None,
                personas: Annotated[bool, Form()] = False,
                limit: Annotated[int | None, Form(ge=1, le=100_000)] = None,
                csrf: Csrf = "") -> Response:
    s = signed_in(request, svc, csrf, change=True)
    req = EvalRequest.model_validate({"app": app, "dataset": dataset, "metrics": metrics,
                                      "kind": kind, "attributes": attributes or None,
                                      "personas": personas, "limit": limit})
    await routes_evals.start_run(req, svc, s.key)
    return RedirectResponse("/console/evals#eval-jobs", 303)


@router.get("/evals/compare")
@page
async def compare(request: Request, svc: Svc, a: Annotated[str, Query(max_length=64)],
                  b: Annotated[str, Query(max_length=64)], offset: Offset = 0,
                  changed: bool = False) -> Response:
    s = signed_in(request, svc)
    c = await routes_evals.compare_runs(a, b, svc, s.key, offset=offset, limit=100,
                                        changed_only=changed)
    return render(request, "compare.html", c=c, offset=offset, changed=changed)


@router.get("/evals/{run_id}")
@page
async def run(request: Request, run_id: str, svc: Svc, offset: Offset = 0) -> Response:
    s = signed_in(request, svc)
    whole = routes_evals.visible_run(svc, s.key, run_id[:64])
    r = whole.as_dict() | {"results": [asdict(x) for x in
                                       whole.results[offset:offset + 100]]}
    others = [o for o in (await routes_evals.list_runs(svc, s.key, app=whole.app, limit=50))[
        "data"] if o["id"] != whole.id]
    hists = {m: _hist([x.scores[m] for x in whole.results if m in x.scores])
             for m in whole.summary}
    return render(request, "run.html", r=r, offset=offset, others=others, hists=hists)


@router.get("/evals/{run_id}/report")
@page
async def run_report(request: Request, run_id: str, svc: Svc) -> Response:
    """A run's report (red-team and fairness runs have their own), as the API gives it."""
    s = signed_in(request, svc)
    body = await routes_evals.run_report(run_id[:64], svc, s.key, format="md")
    return render(request, "report.html", run_id=run_id[:64], text=bytes(body.body).decode())


@router.get("/datasets")
@page
async def datasets(request: Request, svc: Svc) -> Response:
    s = signed_in(request, svc)
    data = (await routes_evals.list_datasets(svc, s.key))["data"]
    return render(request, "datasets.html", datasets=data)


@router.get("/datasets/{ref}")
@page
async def dataset(request: Request, ref: str, svc: Svc, offset: Offset = 0) -> Response:
    s = signed_in(request, svc)
    d = await routes_evals.get_dataset(ref, svc, s.key, offset=offset, limit=100)
    return render(request, "dataset.html", d=d, offset=offset)


@router.post("/datasets")
@page
async def upload(request: Request, svc: Svc, file: Annotated[UploadFile, File()],
                 name: Annotated[str, Form(max_length=64)], csrf: Csrf = "") -> Response:
    s = signed_in(request, svc, csrf, change=True)
    v = await routes_evals.add_dataset(name, file, svc, s.key)
    return RedirectResponse(f"/console/datasets/{v['ref']}", 303)


@router.get("/review")
@page
async def review(request: Request, svc: Svc,
                 app: Annotated[str, Query(max_length=200)] = "") -> Response:
    s = signed_in(request, svc)
    queue = (await routes_evals.review_queue(svc, s.key, app=app or None, limit=100))["data"]
    golden = [d["name"] for d in (await routes_evals.list_datasets(svc, s.key))["data"]]
    return render(request, "review.html", queue=queue, datasets=golden or ["golden"],
                  app=app)


@router.post("/review/{trace_id}")
@page
async def decide(request: Request, trace_id: str, svc: Svc,
                 action: Annotated[Literal["accept", "correct", "discard"], Form()],
                 dataset: Annotated[str, Form(max_length=64)] = "golden",
                 reference: Annotated[str, Form(max_length=20_000)] = "",
                 csrf: Csrf = "") -> Response:
    """One decision; htmx replaces the row with what became of it."""
    s = signed_in(request, svc, csrf, change=True)
    check_name(dataset)
    item = ReviewItem(trace_id=trace_id[:64], action=action, reference=reference)
    done = await routes_evals.review(ReviewRequest(dataset=dataset, decisions=[item]), svc,
                                     s.key)
    if request.headers.get("hx-request") == "true":
        return render(request, "review_done.html", action=action, trace_id=trace_id,
                      dataset=done["dataset"])
    return RedirectResponse("/console/review", 303)


@router.get("/drift")
@page
async def drift(request: Request, svc: Svc,
                app: Annotated[str, Query(max_length=200)] = "") -> Response:
    s = signed_in(request, svc)
    found = (await routes_evals.list_drift(svc, s.key, app=app or None, limit=100))["data"]
    return render(request, "drift.html", runs=found)


@router.get("/drift/{run_id}")
@page
async def drift_run(request: Request, run_id: str, svc: Svc) -> Response:
    s = signed_in(request, svc)
    return render(request, "drift_run.html", r=await routes_evals.get_drift(run_id, svc, s.key))
