"""Native routes: app answers with citations, collections and uploads, feedback, traces,
health, readiness and metrics."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from alicerce.apps.registry import AppVersion
from alicerce.errors import AlicerceError, InputError, NotFoundError
from alicerce.ingest.jobs import IngestJob
from alicerce.observe.trace_records import Trace
from alicerce.refs import split_ref
from alicerce.server.deps import Key, Svc, no_cache
from alicerce.server.wire import (
    AskRequest,
    AskResponse,
    DeployRequest,
    FeedbackRequest,
    LabelRequest,
    RollbackRequest,
    SearchRequest,
    SearchResponse,
)
from alicerce.types import Message

router = APIRouter()


@router.post("/v1/apps/{app}/ask", response_model=AskResponse, tags=["apps"])
async def ask(app: str, req: AskRequest, request: Request, svc: Svc,
              key: Key) -> dict[str, Any]:
    """A grounded answer from `app` with its citations, trace id, timings and versions.

    With `conversation_id` the turn joins a stored conversation (follow-ups are rewritten
    into standalone questions); without, each question stands alone and may come from cache.
    """
    if svc.kind(app) != "app":
        raise NotFoundError(f"no app named {app!r}", hint="GET /v1/models lists the apps")
    ref = svc.alc.resolve_app(app)  # looked up once: this version serves the request
    svc.admit(key, "ask", ref)
    request.state.app = split_ref(app)[0]  # "kb@<anything>" must not become a new series
    params = svc.decoding(req, ref)
    if req.model is not None:
        svc.kind(req.model)
    if req.conversation_id is not None:
        items = svc.chat_turn(key, ref, req.question, params, svc.app_options(req),
                              req.model, req.conversation_id)
    else:
        items = svc.answer(key, ref, [Message("user", req.question)], params,
                           svc.app_options(req), model=req.model,
                           use_cache=not no_cache(request))
    final: dict[str, Any] = {}
    async for item in items:
        if isinstance(item, dict):
            final = item
    return final


@router.get("/v1/collections", tags=["collections"])
async def collections(svc: Svc,
                      key: Key) -> dict[str, Any]:
    rows = [asdict(c) for c in svc.alc.collections() if key.may_use(c.name)]
    return {"object": "list", "data": rows}


@router.post("/v1/collections/{name}/search", response_model=SearchResponse,
             tags=["collections"])
async def search(name: str, req: SearchRequest, svc: Svc, key: Key) -> dict[str, Any]:
    """The collection's best chunks for a query, with each retriever's score behind every
    hit (what an app's retrieval step sees), without asking a model. A read key may search
    too: it changes nothing (and counts against the key's rate limit)."""
    svc.admit(key, "ask" if "ask" in key.scopes else "read")
    key.require_collection(name)  # before the lookup: no probing for other collections
    mode = req.mode or svc.settings.search_mode
    hits = await anyio.to_thread.run_sync(lambda: svc.alc.search(
        req.query, name, mode=mode, k=req.k, alpha=req.alpha, filters=req.filters))
    return {"object": "list", "collection": name, "mode": mode,
            "data": [asdict(h) for h in hits]}


@router.post("/v1/collections/{name}/documents", status_code=202, tags=["collections"])
async def upload(name: str, files: Annotated[list[UploadFile], File()],
                 svc: Svc,
                 key: Key) -> dict[str, Any]:
    """Ingest uploaded files into `name` (created if new) in the background; poll the job."""
    svc.admit(key, "ingest", name)
    limit = int(svc.settings.max_upload_mb * 1024 * 1024)
    got = []
    for f in files:
        data = await f.read(limit + 1)
        if len(data) > limit:
            raise InputError(f"{f.filename} is over {svc.settings.max_upload_mb} MB",
                             hint="split it, or raise max_upload_mb")
        got.append((f.filename or "upload", data))
    job = svc.uploads.start(key, name, got)
    return _job(job)


@router.get("/v1/collections/{name}/jobs/{job_id}", tags=["collections"])
async def job(name: str, job_id: str, svc: Svc,
              key: Key) -> dict[str, Any]:
    """An upload job the key started: queued, running, done (with the report) or failed."""
    return _job(svc.uploads.get(key, name, job_id))


@router.post("/v1/feedback", tags=["feedback"])
async def feedback(req: FeedbackRequest, svc: Svc,
                   key: Key) -> dict[str, Any]:
    key.require("ask")
    trace = svc.alc.traces.get(req.trace_id)
    svc.may_see_trace(key, trace.app, trace.caller)  # own traces only (admin excepted)
    fb = svc.alc.traces.feedback(req.trace_id, req.score, req.comment, key.id, req.rating,
                                 req.reference)
    kind = {1: "up", -1: "down"}.get(req.score, "rating" if req.rating else "comment")
    svc.metrics.feedback.labels(trace.app, kind).inc()
    if req.rating:
        svc.metrics.ratings.labels(trace.app).observe(req.rating)
    return {"trace_id": fb.trace_id, "score": fb.score, "rating": fb.rating, "recorded": True}


@router.get("/v1/traces", tags=["traces"])
async def traces(svc: Svc, key: Key, app: str | None = None,
                 since_s: Annotated[float | None, Query(ge=0)] = None,
                 feedback: Literal["up", "down", "none", "any"] = "any",
                 status: Literal["ok", "error"] | None = None,
                 caller: Annotated[str | None, Query(max_length=64)] = None,
                 app_version: Annotated[int | None, Query(ge=1, le=2**31)] = None,
                 before: Annotated[float | None, Query(ge=0)] = None,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
    """Newest first, filtered; the next page is `before` the last row's `at`. A key without
    the admin or read scope sees its own traces only (`caller` is then ignored)."""
    key.require_any("ask", "read")
    if app is not None:
        svc.may_see_trace(key, app, key.id)
    found = svc.alc.traces.find(app=app, since_s=since_s, feedback=feedback, status=status,
                                caller=key.owner or caller or None,
                                app_version=app_version, before=before, limit=limit)
    rows = []
    for t in found:
        try:
            svc.may_see_trace(key, t.app, t.caller)
        except AlicerceError:
            continue
        rows.append(_summary(t))
    return {"object": "list", "data": rows}


@router.get("/v1/traces/{trace_id}", tags=["traces"])
async def trace(trace_id: str, svc: Svc,
                key: Key) -> dict[str, Any]:
    """Every step (spans), the lineage and the feedback of one request."""
    t = svc.alc.traces.get(trace_id)
    svc.may_see_trace(key, t.app, t.caller)
    return asdict(t) | {"feedback": [asdict(f) for f in svc.alc.traces.feedback_for(t.id)]}


@router.get("/v1/apps", tags=["apps"])
async def apps(svc: Svc, key: Key) -> dict[str, Any]:
    """Deployed apps (newest version, labels) and collections served with the defaults."""
    key.require_any("ask", "read")
    rows = []
    for name in svc.apps(key):
        spec = svc.alc.app(name)
        rows.append({"name": name, "deployed": spec is not None,
                     "version": spec.version if spec else None,
                     "labels": list(spec.labels) if spec else [],
                     "description": spec.spec["description"] if spec else ""})
    return {"object": "list", "data": rows}


@router.post("/v1/apps", status_code=201, tags=["apps"])
async def deploy(req: DeployRequest, svc: Svc, key: Key) -> dict[str, Any]:
    """Validate, resolve and store an app spec (admin)."""
    key.require("admin")
    version, created = svc.alc.deploy_app(req.spec, key.id)
    return version_dict(version) | {"created": created}


@router.get("/v1/apps/{app}", tags=["apps"])
async def app_version(app: str, svc: Svc, key: Key) -> dict[str, Any]:
    """The version `app` (`name`, `name@N`, `name@label`) names now, with its resolved spec."""
    key.require_any("ask", "read")
    spec = svc.alc.app(app)
    if spec is None:
        raise NotFoundError(f"no deployed app named {app!r}", hint="GET /v1/apps lists them")
    svc.require_app(key, app)
    return version_dict(spec) | {"spec": spec.spec,
                             "feedback": svc.alc.traces.summary(spec.name)}


@router.post("/v1/apps/{app}/label", tags=["apps"])
async def label(app: str, req: LabelRequest, svc: Svc, key: Key) -> dict[str, Any]:
    """Point a label at a version; the server answers with it from the next request."""
    key.require("admin")
    version, _ = svc.alc.label_app(f"{app}@{req.version}", req.label, key.id)
    return version_dict(version)


@router.post("/v1/apps/{app}/rollback", tags=["apps"])
async def rollback(app: str, req: RollbackRequest, svc: Svc, key: Key) -> dict[str, Any]:
    """Move the label back to the version it pointed at before."""
    key.require("admin")
    version, left = svc.alc.rollback_app(app, req.label, key.id)
    return version_dict(version) | {"from_version": left}


@router.get("/healthz", tags=["ops"])
async def healthz() -> dict[str, str]:
    """The process is alive (nothing else is checked)."""
    return {"status": "ok"}


@router.get("/readyz", tags=["ops"])
async def readyz(svc: Svc) -> JSONResponse:
    """Models loaded and the store reachable: only then should traffic come here."""
    ok, checks = svc.readiness()
    return JSONResponse({"status": "ready" if ok else "not ready", **checks},
                        200 if ok else 503)


@router.get("/metrics", tags=["ops"])
async def metrics(svc: Svc) -> Response:
    # off the event loop: the drift and evaluation gauges read the home's database
    body = await anyio.to_thread.run_sync(svc.metrics.render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def version_dict(v: AppVersion) -> dict[str, Any]:
    return {"name": v.name, "version": v.version, "ref": v.ref, "hash": v.hash,
            "labels": list(v.labels), "created_at": v.created_at, "created_by": v.created_by}


def _summary(t: Trace) -> dict[str, Any]:
    return {"id": t.id, "at": t.at, "app": t.app, "app_version": t.app_version,
            "caller": t.caller, "question": t.question, "answer": t.answer,
            "status": t.status, "error": t.error, "latency_ms": t.latency_ms}


def _job(job: IngestJob) -> dict[str, Any]:
    return {"id": job.id, "collection": job.collection, "files": list(job.files),
            "state": job.state, "report": job.report, "error": job.error,
            "resumed": job.resumed, "created_at": job.created_at,
            "updated_at": job.updated_at}
