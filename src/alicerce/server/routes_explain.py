"""Explanations of answers over HTTP: which sources and sentences a traced answer rests on
(docs/responsible-ai.md). Making one spends model calls, so it takes `ask` (the trace's
owner) or `admin`; a `read` key reads the kept ones. One explanation runs at a time per
server."""

from __future__ import annotations

import threading
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from alicerce.access.keys import ApiKey, Scope
from alicerce.errors import BusyError, NotFoundError
from alicerce.explain.counterfactual import parse_change
from alicerce.explain.traced import DEFAULT_BUDGET
from alicerce.server.deps import Key, Svc
from alicerce.server.service import Service

router = APIRouter()
_RUNNING = threading.Lock()
MAX_BUDGET = 64  # calls one HTTP request may spend; the CLI allows more


class CounterfactualRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    change: Annotated[str, Field(min_length=1, max_length=2000, description=(
        "troque 'X' por 'Y' / replace 'X' with 'Y', pergunta: ... / question: ..., sem a "
        "fonte N / without source N, prompt NAME@V, modelo NAME / model NAME"))]


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    budget: Annotated[int, Field(ge=1, le=MAX_BUDGET)] = DEFAULT_BUDGET
    seed: Annotated[int, Field(ge=0, le=2**31)] = 0
    refresh: bool = False


def _readable(svc: Service, key: ApiKey, trace_id: str, *scopes: Scope) -> str:
    key.require_any(*scopes)
    t = svc.alc.traces.get(trace_id[:64])
    svc.may_see_trace(key, t.app, t.caller)
    return str(t.id)


@router.post("/v1/traces/{trace_id}/explain", tags=["traces"])
async def explain(trace_id: str, req: ExplainRequest, svc: Svc, key: Key) -> dict[str, Any]:
    """Attribute the answer to its sources and their sentences by ablation under the model
    that answered, within `budget` model calls; kept, so asking again is free."""
    tid = _readable(svc, key, trace_id, "ask", "admin")
    kept = None if req.refresh else svc.alc.explanations.store.get(tid, req.budget, req.seed)
    if kept is not None:
        return kept.as_dict()
    if not _RUNNING.acquire(blocking=False):
        raise BusyError("another explanation is running", hint="try again in a minute",
                        retry_after=30)
    try:
        e = await anyio.to_thread.run_sync(lambda: svc.alc.explain(
            tid, budget=req.budget, seed=req.seed, refresh=req.refresh))
    finally:
        _RUNNING.release()
    return e.as_dict()


@router.get("/v1/traces/{trace_id}/explain", tags=["traces"])
async def explained(trace_id: str, svc: Svc, key: Key,
                    budget: Annotated[int | None, Query(ge=1, le=512)] = None,
                    seed: Annotated[int, Query(ge=0, le=2**31)] = 0) -> dict[str, Any]:
    """The kept explanation of a trace: the newest, or the one made with `budget` (404
    until one was made)."""
    tid = _readable(svc, key, trace_id, "ask", "read")
    store = svc.alc.explanations.store
    kept = store.latest(tid) if budget is None else store.get(tid, budget, seed)
    if kept is None:
        raise NotFoundError(f"trace {tid} has not been explained"
                            + (f" with budget {budget}" if budget else ""),
                            hint=f"POST /v1/traces/{tid}/explain")
    return kept.as_dict()


@router.post("/v1/traces/{trace_id}/counterfactual", tags=["traces"])
async def counterfactual(trace_id: str, req: CounterfactualRequest, svc: Svc,
                         key: Key) -> dict[str, Any]:
    """Ask the traced request again with one change; both answers, their differences word
    by word, and the new trace, linked to this one."""
    tid = _readable(svc, key, trace_id, "ask", "admin")
    change = parse_change(req.change)  # a change that cannot be read costs no model call
    if change.kind == "model":  # an installed model by name, never a file path
        key.require_models()
        if change.new not in svc.model_names:
            raise NotFoundError(f"no model named {change.new[:80]!r}",
                                hint="GET /v1/models lists them")
    if not _RUNNING.acquire(blocking=False):
        raise BusyError("an explanation is running", hint="try again in a minute",
                        retry_after=30)
    try:
        cf = await anyio.to_thread.run_sync(lambda: svc.alc.counterfactual(
            tid, change, key.id))
    finally:
        _RUNNING.release()
    return cf.as_dict()


@router.get("/v1/traces/{trace_id}/counterfactuals", tags=["traces"])
async def counterfactuals(trace_id: str, svc: Svc, key: Key) -> dict[str, Any]:
    """The counterfactuals asked of this trace, and the one it answers, newest first."""
    tid = _readable(svc, key, trace_id, "ask", "read")
    return {"object": "list", "data": svc.alc.counterfactuals.of(tid)}
