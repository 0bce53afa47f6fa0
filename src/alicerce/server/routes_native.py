"""Native routes: app answers with citations, collections and uploads, feedback, traces,
health, readiness and metrics."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from alicerce.errors import InputError, NotFoundError
from alicerce.server.deps import Key, Svc, no_cache
from alicerce.server.wire import AskRequest, AskResponse, FeedbackRequest
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
    svc.admit(key, "ask", app)
    request.state.app = app
    params = svc.decoding(req)
    if req.model is not None:
        svc.kind(req.model)
    if req.conversation_id is not None:
        items = svc.chat_turn(key, app, req.question, params, svc.app_options(req),
                              req.model, req.conversation_id)
    else:
        items = svc.answer(key, app, [Message("user", req.question)], params,
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
    job = svc.start_ingest(key, name, got)
    return _job(job)


@router.get("/v1/collections/{name}/jobs/{job_id}", tags=["collections"])
async def job(name: str, job_id: str, svc: Svc,
              key: Key) -> dict[str, Any]:
    key.require_collection(name)
    found = svc.jobs.get(job_id)
    if found is None or found.collection != name:
        raise NotFoundError(f"no ingest job {job_id!r} for {name!r}",
                            hint="use the id returned by the upload")
    return _job(found)


@router.post("/v1/feedback", tags=["feedback"])
async def feedback(req: FeedbackRequest, svc: Svc,
                   key: Key) -> dict[str, Any]:
    key.require("ask")
    trace = svc.alc.traces.get(req.trace_id)
    key.require_collection(trace.app)
    fb = svc.alc.traces.feedback(req.trace_id, req.score, req.comment, key.id)
    svc.metrics.feedback.labels(trace.app, "up" if req.score > 0 else "down").inc()
    return {"trace_id": fb.trace_id, "score": fb.score, "recorded": True}


@router.get("/v1/traces/{trace_id}", tags=["traces"])
async def trace(trace_id: str, svc: Svc,
                key: Key) -> dict[str, Any]:
    t = svc.alc.traces.get(trace_id)
    key.require_collection(t.app)
    if key.id != t.caller:
        key.require("admin")
    return asdict(t) | {"feedback": [asdict(f) for f in svc.alc.traces.feedback_for(t.id)]}


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
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _job(job: Any) -> dict[str, Any]:
    return {"id": job.id, "collection": job.collection, "files": job.files,
            "state": job.state, "report": job.report, "error": job.error}
