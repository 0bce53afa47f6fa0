"""Evaluation routes: stored datasets, evaluation and red-team runs, run comparisons, the
review queue and its decisions, drift runs.

Reading takes the `read` (or `admin`) scope and shows only apps the key may use; changing
(a dataset version, review decisions) takes `admin`. Everything is thin over the core API
that the CLI calls.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import HTMLResponse, PlainTextResponse

from alicerce import datasets
from alicerce.access.keys import ApiKey
from alicerce.core.governance import ReviewDecision
from alicerce.errors import AlicerceError, InputError, NotFoundError
from alicerce.evaluate.compare import compare
from alicerce.evaluate.dataset_registry import DatasetVersion, check_name
from alicerce.evaluate.runs import Run
from alicerce.server.deps import Key, Svc
from alicerce.server.service import Service
from alicerce.server.wire_manage import EvalRequest, ReviewRequest

router = APIRouter()
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
RunKind = Literal["run", "pairwise", "redteam", "online", "fairness"]


def _sees(svc: Service, key: ApiKey, app: str) -> bool:
    """Whether a read key may see an app's records (its collections, or its raw model)."""
    try:
        svc.may_see_trace(key, app, key.id)
        return True
    except AlicerceError:
        return False


def visible_run(svc: Service, key: ApiKey, run_id: str) -> Run:
    """A run the key may read; another's app's run reads as missing."""
    key.require("read")
    run = svc.alc.evals.runs.get(run_id[:64])
    if not _sees(svc, key, run.app):
        raise NotFoundError(f"no evaluation run {run_id[:64]!r}", hint="GET /v1/evals lists them")
    return run


def _dataset(v: DatasetVersion) -> dict[str, Any]:
    return asdict(v) | {"ref": v.ref}


@router.get("/v1/datasets", tags=["evaluation"])
async def list_datasets(svc: Svc, key: Key) -> dict[str, Any]:
    """Each stored dataset's newest version."""
    key.require("read")
    return {"object": "list", "data": [_dataset(v) for v in svc.alc.datasets.all()]}


@router.get("/v1/datasets/{ref}", tags=["evaluation"])
async def get_dataset(ref: str, svc: Svc, key: Key, offset: Offset = 0,
                      limit: Limit = 100) -> dict[str, Any]:
    """A version (`NAME` is the newest, `NAME@N`) with a page of its rows, every version of
    the dataset, and the runs made on this version."""
    key.require("read")
    v = svc.alc.datasets.version(ref[:80])
    runs = [r.as_dict() for r in svc.alc.evals.runs.list(dataset_version=v.hash, limit=100)
            if _sees(svc, key, r.app)]
    return _dataset(v) | {
        "versions": [_dataset(x) for x in svc.alc.datasets.versions(v.name)],
        "items": [asdict(r) for r in svc.alc.datasets.rows(v, offset, limit)],
        "offset": offset, "runs": runs}


@router.post("/v1/datasets/{name}", status_code=201, tags=["evaluation"])
async def add_dataset(name: str, file: Annotated[UploadFile, File()], svc: Svc,
                      key: Key) -> dict[str, Any]:
    """Store an uploaded JSONL or CSV file's rows as the next version of `name` (admin);
    the same rows as a stored version return that version."""
    key.require("admin")
    check_name(name)
    limit = int(svc.settings.max_upload_mb * 1024 * 1024)
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{file.filename} is over {svc.settings.max_upload_mb} MB",
                         hint="split it, or raise max_upload_mb")
    suffix = Path(file.filename or "").suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise InputError(f"dataset upload {str(file.filename)[:80]!r}: use .jsonl or .csv",
                         hint="convert other formats with `alicerce eval dataset --to`")

    def store() -> tuple[DatasetVersion, bool, int]:
        with tempfile.TemporaryDirectory() as tmp:  # the parser reads files by name
            path = Path(tmp) / f"{name}{suffix}"
            path.write_bytes(data)
            ds = datasets.load(path)
        v, created = svc.alc.datasets.add(name, ds.rows, actor=key.id,
                                          note=f"upload {str(file.filename)[:100]}")
        svc.alc.keys.audit(key.id, "dataset.add", v.ref, {"rows": v.rows, "created": created})
        return v, created, len(ds.problems)
    v, created, skipped = await anyio.to_thread.run_sync(store)
    return _dataset(v) | {"created": created, "skipped": skipped}


@router.get("/v1/evals", tags=["evaluation"])
async def list_runs(svc: Svc, key: Key, app: str | None = None, kind: RunKind | None = None,
                    limit: Limit = 50) -> dict[str, Any]:
    """Evaluation runs, newest first (kind `redteam` for red-team runs, `fairness` for
    fairness probes), without rows."""
    key.require("read")
    runs = svc.alc.evals.runs.list(app, limit=limit, kind=kind)
    return {"object": "list", "data": [r.as_dict() for r in runs if _sees(svc, key, r.app)]}


@router.post("/v1/evals", status_code=202, tags=["evaluation"])
async def start_run(req: EvalRequest, svc: Svc, key: Key) -> dict[str, Any]:
    """Score an app version on a stored dataset in the background, or probe it for fairness
    (`kind: fairness`) (admin); poll the job until it names its run. Jobs run one at a
    time."""
    key.require("admin")
    svc.require_app(key, req.app)
    svc.kind(req.app)  # an app or a collection, else 404 before the job exists
    options: dict[str, Any] = {"judge_model": req.judge_model, "limit": req.limit,
                               "seed": req.seed if req.limit else None}
    if req.kind == "fairness":
        options |= {"kind": "fairness", "attributes": req.attributes,
                    "personas": req.personas, "judge": req.judge}
    job = svc.evaluations.start(key, req.app, req.dataset, req.metrics, options)
    svc.alc.keys.audit(key.id, "eval.start", job.id, {"app": req.app,
                                                      "dataset": job.dataset})
    return job.as_dict()


@router.get("/v1/evals/jobs", tags=["evaluation"])
async def list_jobs(svc: Svc, key: Key, limit: Limit = 50) -> dict[str, Any]:
    """Evaluation jobs, newest first, with their progress and the run each produced."""
    key.require("read")
    return {"object": "list", "data": [j.as_dict() for j in svc.alc.eval_jobs.recent(
        None, limit) if _sees(svc, key, j.app.partition("@")[0])]}


@router.get("/v1/evals/jobs/{job_id}", tags=["evaluation"])
async def get_job(job_id: str, svc: Svc, key: Key) -> dict[str, Any]:
    key.require("read")
    job = svc.alc.eval_jobs.get(job_id[:64])
    if not _sees(svc, key, job.app.partition("@")[0]):
        raise NotFoundError(f"no evaluation job {job_id[:64]!r}",
                            hint="GET /v1/evals/jobs lists them")
    return job.as_dict()


@router.get("/v1/evals/{run_id}", tags=["evaluation"])
async def get_run(run_id: str, svc: Svc, key: Key, offset: Offset = 0,
                  limit: Limit = 100) -> dict[str, Any]:
    """A run's metrics with their intervals, and a page of its rows (each with its trace)."""
    run = visible_run(svc, key, run_id)
    return run.as_dict() | {"results": [asdict(r) for r in
                                        run.results[offset:offset + limit]],
                            "offset": offset}


@router.get("/v1/evals/{run_id}/report", tags=["evaluation"], response_model=None)
async def run_report(run_id: str, svc: Svc, key: Key,
                     format: Literal["html", "md"] = "html") -> HTMLResponse | PlainTextResponse:
    """A run's report as a page or as Markdown: the red-team and fairness reports for those
    kinds, the evaluation report (tables, charts) for the others."""
    from alicerce.evaluate import fairness_report, redteam_report, report

    run = visible_run(svc, key, run_id)
    own = {"fairness": fairness_report, "redteam": redteam_report}.get(run.kind)
    if format == "md":
        return PlainTextResponse(own.markdown(run) if own else report.markdown(run, None),
                                 media_type="text/markdown; charset=utf-8")
    return HTMLResponse(own.html(run) if own else report.html_report(run, None))


@router.get("/v1/evals/{run_a}/compare/{run_b}", tags=["evaluation"])
async def compare_runs(run_a: str, run_b: str, svc: Svc, key: Key, offset: Offset = 0,
                       limit: Limit = 100, changed_only: bool = False) -> dict[str, Any]:
    """B against A: each metric's difference with its paired interval, and the rows both
    scored, the most changed first, each with both answers and both traces."""
    a, b = visible_run(svc, key, run_a), visible_run(svc, key, run_b)
    c = await anyio.to_thread.run_sync(lambda: compare(a, b, None, changed_only))
    return {"a": a.as_dict(), "b": b.as_dict(),
            "metrics": [{"metric": m.metric, "a": m.a.as_dict(), "b": m.b.as_dict(),
                         "delta": m.delta.as_dict(), "significant": m.significant}
                        for m in c.metrics],
            "only_a": c.only_a, "only_b": c.only_b, "rows": len(c.questions),
            "changed": sum(1 for q in c.questions if q.change), "offset": offset,
            "questions": [asdict(q) for q in c.questions[offset:offset + limit]]}


@router.get("/v1/review", tags=["evaluation"])
async def review_queue(svc: Svc, key: Key, app: str | None = None,
                       limit: Limit = 100) -> dict[str, Any]:
    """Answers waiting for a person, oldest first: rated down, or scored low online."""
    key.require("read")
    queue = svc.alc.review_queue(app, limit)
    rows = []
    for t, why in queue:
        if not _sees(svc, key, t.app):
            continue
        fb = svc.alc.traces.feedback_for(t.id)
        rows.append({"trace_id": t.id, "at": t.at, "app": t.app, "app_version": t.app_version,
                     "why": why, "question": t.question, "answer": t.answer,
                     "comments": [f.comment for f in fb if f.comment],
                     "reference": next((f.reference for f in reversed(fb) if f.reference),
                                       "")})
    return {"object": "list", "data": rows}


@router.post("/v1/review", tags=["evaluation"])
async def review(req: ReviewRequest, svc: Svc, key: Key) -> dict[str, Any]:
    """Decide queued answers (admin): accepted and corrected ones become a new version of
    the dataset (returned); all of them leave the queue."""
    key.require("admin")
    for d in req.decisions:  # every trace checked before anything is written
        t = svc.alc.traces.get(d.trace_id)
        svc.may_see_trace(key, t.app, t.caller)
    decided = [ReviewDecision(d.trace_id, d.action, d.reference) for d in req.decisions]
    v = await anyio.to_thread.run_sync(lambda: svc.alc.review(decided, req.dataset, key.id))
    return {"decided": len(decided), "dataset": _dataset(v) if v else None}


@router.get("/v1/drift", tags=["evaluation"])
async def list_drift(svc: Svc, key: Key, app: str | None = None,
                     limit: Limit = 50) -> dict[str, Any]:
    """Drift and skew runs, newest first, with each side's statistics."""
    key.require("read")
    runs = svc.alc.drift_runs.history(app, limit)
    return {"object": "list",
            "data": [r.as_dict() for r in runs if _sees(svc, key, r.app)]}


@router.get("/v1/drift/{run_id}", tags=["evaluation"])
async def get_drift(run_id: str, svc: Svc, key: Key) -> dict[str, Any]:
    key.require("read")
    run = svc.alc.drift_runs.get(run_id[:64])
    if not _sees(svc, key, run.app):
        raise NotFoundError(f"no drift run {run_id[:64]!r}", hint="GET /v1/drift lists them")
    return run.as_dict()
