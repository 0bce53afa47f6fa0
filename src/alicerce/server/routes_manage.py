"""Management routes: prompt versions and labels, API keys and the audit log, adapters and
tuning runs.

Reading takes `read` (or `admin`); keys and the audit log also need a key that is not
restricted to some collections (they concern everyone). Every change takes `admin` and is
written to the audit log with the key that made it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query

from alicerce.access.keys import ApiKey
from alicerce.errors import ForbiddenError, NotFoundError
from alicerce.prompts.template import PromptTemplate
from alicerce.server.deps import Key, Svc
from alicerce.server.wire_manage import KeyRequest, PromptLabelRequest, PromptRequest

router = APIRouter()
Limit = Annotated[int, Query(ge=1, le=1000)]


def _prompt(p: PromptTemplate) -> dict[str, Any]:
    return asdict(p) | {"ref": p.ref, "hash": p.hash, "variables": sorted(p.variables)}


def _everyone(key: ApiKey) -> None:
    """Keys and the audit log are about every caller: not for collection-restricted keys."""
    key.require("read")
    if key.collections is not None:
        raise ForbiddenError(f"key {key.id} ({key.name}) is restricted to some collections",
                             hint="use an unrestricted admin or read key")


def _key(k: ApiKey) -> dict[str, Any]:
    return {"id": k.id, "name": k.name, "scopes": list(k.scopes),
            "collections": list(k.collections) if k.collections is not None else None,
            "rpm": k.rpm, "tpm": k.tpm, "created_at": k.created_at, "revoked_at": k.revoked_at}


@router.get("/v1/prompts", tags=["prompts"])
async def list_prompts(svc: Svc, key: Key) -> dict[str, Any]:
    """Every prompt's newest version, with the labels of all its versions."""
    key.require("read")
    rows = []
    for p in svc.alc.prompts.all():
        labels = {lab: v.version for v in svc.alc.prompts.versions(p.name) for lab in v.labels}
        rows.append(_prompt(p) | {"labelled": labels})
    return {"object": "list", "data": rows}


@router.get("/v1/prompts/{ref}", tags=["prompts"])
async def get_prompt(ref: str, svc: Svc, key: Key) -> dict[str, Any]:
    """A version (`NAME`, `NAME@N`, `NAME@LABEL`), every version's number and labels, and
    the label moves."""
    key.require("read")
    p = svc.alc.prompts.get(ref[:100])
    return _prompt(p) | {
        "versions": [{"version": v.version, "labels": list(v.labels),
                      "created_at": v.created_at, "description": v.description}
                     for v in svc.alc.prompts.versions(p.name)],
        "history": [{"label": h[0], "from": h[1], "to": h[2], "at": h[3]}
                    for h in svc.alc.prompts.history(p.name)]}


@router.get("/v1/prompts/{name}/diff", tags=["prompts"])
async def diff_prompts(name: str, a: Annotated[int, Query(ge=1, le=2**31)],
                       b: Annotated[int, Query(ge=1, le=2**31)], svc: Svc,
                       key: Key) -> dict[str, Any]:
    """A unified diff of two versions' system and user templates."""
    key.require("read")
    return {"a": f"{name}@{a}", "b": f"{name}@{b}",
            "diff": svc.alc.prompts.diff(f"{name[:64]}@{a}", f"{name[:64]}@{b}")}


@router.post("/v1/prompts/{name}", status_code=201, tags=["prompts"])
async def create_prompt(name: str, req: PromptRequest, svc: Svc, key: Key) -> dict[str, Any]:
    """A new version of `name` (admin); the same content returns the version that has it.
    Apps pick it up when a label they use moves to it."""
    key.require("admin")
    try:
        known = {v.version for v in svc.alc.prompts.versions(name[:64])}
    except NotFoundError:  # a new prompt
        known = set()
    p = svc.alc.prompts.create(name, req.template, req.system, req.description)
    created = p.version not in known
    if created:
        svc.alc.keys.audit(key.id, "prompt.create", p.ref, {"hash": p.hash})
    return _prompt(p) | {"created": created}


@router.post("/v1/prompts/{name}/label", tags=["prompts"])
async def label_prompt(name: str, req: PromptLabelRequest, svc: Svc,
                       key: Key) -> dict[str, Any]:
    """Point a label at a version (admin); apps that use `NAME@LABEL` answer with it from
    the next request."""
    key.require("admin")
    return _prompt(svc.alc.label_prompt(f"{name[:64]}@{req.version}", req.label, key.id))


@router.get("/v1/keys", tags=["keys"])
async def list_keys(svc: Svc, key: Key) -> dict[str, Any]:
    """Every key's name, scopes, collections and limits (never a secret)."""
    _everyone(key)
    return {"object": "list", "data": [_key(k) for k in svc.alc.keys.all()]}


@router.post("/v1/keys", status_code=201, tags=["keys"])
async def create_key(req: KeyRequest, svc: Svc, key: Key) -> dict[str, Any]:
    """A new key (admin). Its secret is in this answer only: it is stored as a hash."""
    key.require("admin")
    _everyone(key)  # a restricted admin could otherwise mint an unrestricted key
    made, secret = svc.alc.keys.create(req.name, req.scopes, req.collections, req.rpm,
                                       req.tpm, actor=key.id)
    return _key(made) | {"key": secret}


@router.post("/v1/keys/{key_id}/revoke", tags=["keys"])
async def revoke_key(key_id: str, svc: Svc, key: Key) -> dict[str, Any]:
    """Revoke a key (admin): its next request is refused."""
    key.require("admin")
    _everyone(key)
    return _key(svc.alc.keys.revoke(key_id[:64], actor=key.id))


@router.get("/v1/audit", tags=["keys"])
async def audit(svc: Svc, key: Key, limit: Limit = 100) -> dict[str, Any]:
    """Who changed what (keys, deploys, labels, reviews, datasets), newest first."""
    _everyone(key)
    return {"object": "list", "data": [asdict(e) for e in svc.alc.keys.audit_log(limit)]}


@router.get("/v1/adapters", tags=["tuning"])
async def list_adapters(svc: Svc, key: Key) -> dict[str, Any]:
    """Adapter versions with their base, method, labels and metrics (every caller's for
    admin and read keys, else the key's own and the operator's)."""
    key.require_any("read", "ask")
    found = (svc.alc.adapters.list("admin") if key.sees_all
             else svc.alc.adapters.servable_list(key.id))
    return {"object": "list", "data": [a.as_dict(paths=False) for a in found]}


@router.get("/v1/tune/runs", tags=["tuning"])
async def list_tune_runs(svc: Svc, key: Key, limit: Limit = 50) -> dict[str, Any]:
    """Tuning runs, newest first, with their loss history."""
    key.require("read")
    return {"object": "list",
            "data": [asdict(r) for r in svc.alc.tune_runs.list("admin", limit)]}
