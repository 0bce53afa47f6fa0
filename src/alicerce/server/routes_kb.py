"""Read routes for collections, apps and conversations that the console shows and scripts
use: a collection's documents and versions; an app's versions, label moves, diff and
compiled plan; a conversation's turns with their traces and feedback.

They take `ask` or `read`, and only what the key's collections allow (an app is checked as
the answer routes check it)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, PlainTextResponse

from alicerce.apps import card as cards
from alicerce.chains.describe import plan_rows
from alicerce.errors import NotFoundError
from alicerce.refs import split_ref
from alicerce.server.deps import Key, Svc
from alicerce.server.routes_native import version_dict

router = APIRouter()


@router.get("/v1/collections/{name}", tags=["collections"])
async def collection(name: str, svc: Svc, key: Key,
                     offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> dict[str, Any]:
    """Counts, embedder and chunking, the versions (one per ingest that changed it), and a
    page of its documents (key, content hash, source), by key."""
    key.require_any("ask", "read")
    key.require_collection(name)  # before the lookup: no probing for other collections
    coll = svc.alc.store.collection(name)
    info = next((c for c in svc.alc.collections() if c.name == name), None)
    if coll is None or info is None:
        raise NotFoundError(f"no collection named {name[:80]!r}",
                            hint="GET /v1/collections lists them")
    docs = sorted(svc.alc.store.document_hashes(coll).items())
    return asdict(info) | {"versions": svc.alc.versions(name), "offset": offset,
                           "listed": [{"key": k, "hash": h, "source": src}
                                         for k, (h, src) in docs[offset:offset + limit]]}


@router.get("/v1/apps/{app}/versions", tags=["apps"])
async def app_versions(app: str, svc: Svc, key: Key) -> dict[str, Any]:
    """Every version of an app, with its labels, and the label moves (who, when)."""
    key.require_any("ask", "read")
    name = split_ref(app)[0]
    svc.require_app(key, name)
    return {"name": name,
            "versions": [version_dict(v) for v in svc.alc.apps.versions(name)],
            "history": svc.alc.apps.history(name)}


@router.get("/v1/apps/{app}/diff", tags=["apps"])
async def app_diff(app: str, svc: Svc, key: Key, a: Annotated[int, Query(ge=1, le=2**31)],
                   b: Annotated[int, Query(ge=1, le=2**31)]) -> dict[str, Any]:
    """A unified diff of two versions' resolved specs (YAML)."""
    key.require_any("ask", "read")
    name = split_ref(app)[0]
    svc.require_app(key, name)
    return {"a": f"{name}@{a}", "b": f"{name}@{b}",
            "diff": svc.alc.apps.diff(f"{name}@{a}", f"{name}@{b}")}


@router.get("/v1/apps/{app}/plan", tags=["apps"])
async def app_plan(app: str, svc: Svc, key: Key) -> dict[str, Any]:
    """The compiled plan: inputs, steps in run order (models, prompts, rails, tools,
    nested steps), outputs; a RAG app's chain written out."""
    key.require_any("ask", "read")
    v = svc.alc.apps.get(app[:200])
    svc.require_app(key, v.name)
    plan = svc.alc.chains.plan(v)
    return {"app": v.ref, "hash": v.hash,
            "inputs": {k: i.type for k, i in plan.spec.inputs.items()},
            "steps": plan_rows(plan.nodes),
            "outputs": {k: t.type for k, t in plan.output_types.items()}}


@router.get("/v1/conversations/{conversation_id}", tags=["traces"])
async def conversation(conversation_id: str, svc: Svc, key: Key) -> dict[str, Any]:
    """A stored conversation (the session view): each turn with its standalone question,
    answer, trace id and the feedback on that trace. The key's own, or any with read."""
    key.require_any("ask", "read")
    app, caller, turns = svc.alc.conversations.session(conversation_id[:64])
    if caller != key.id and not key.sees_all:  # another's reads as missing
        raise NotFoundError(f"no conversation {conversation_id[:64]!r}",
                            hint="use the conversation_id an answer returned")
    svc.may_see_trace(key, split_ref(app)[0], caller)
    return {"id": conversation_id[:64], "app": app, "caller": caller,
            "turns": [asdict(t) | {"feedback": [asdict(f) for f in
                                                svc.alc.traces.feedback_for(t.trace_id)]}
                      for t in turns]}


@router.get("/v1/apps/{app}/card", tags=["apps"])
async def app_card(app: str, svc: Svc, key: Key,
                   format: Literal["json", "markdown", "html"] = "json") -> Any:
    """The version's app card, generated from what was recorded (docs/apps.md): JSON, or
    the Markdown or HTML document."""
    key.require_any("ask", "read")
    v = svc.alc.apps.get(app[:200])
    svc.require_app(key, v.name)
    c = await anyio.to_thread.run_sync(lambda: cards.build(svc.alc, v.ref))
    if format == "markdown":
        return PlainTextResponse(cards.markdown(c), media_type="text/markdown; charset=utf-8")
    if format == "html":
        return HTMLResponse(cards.to_html(c), headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})
    return asdict(c)
