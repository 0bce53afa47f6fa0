"""Console pages for what answers: collections (documents, versions, uploads with their
ingest progress, a search playground with each retriever's score), apps (versions, labels,
diff, rollback, deploy from YAML with errors in place, the compiled plan drawn as its
steps) and prompts (versions, diff, labels, a new version, and a playground that runs two
versions or two models side by side)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response

from alicerce.errors import AlicerceError, InputError
from alicerce.server import routes_kb, routes_manage, routes_native, routes_openai
from alicerce.server.console.auth import signed_in
from alicerce.server.console.render import page, render
from alicerce.server.deps import Svc
from alicerce.server.errors import describe
from alicerce.server.wire import (
    ChatRequest,
    DeployRequest,
    LabelRequest,
    RollbackRequest,
    SearchRequest,
)
from alicerce.server.wire_manage import PromptLabelRequest, PromptRequest

router = APIRouter(prefix="/console", include_in_schema=False)
Csrf = Annotated[str, Form(max_length=200)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]
Mode = Literal["hybrid", "sparse", "dense"]


@router.get("/collections")
@page
async def collections(request: Request, svc: Svc) -> Response:
    s = signed_in(request, svc)
    data = (await routes_native.collections(svc, s.key))["data"]
    return render(request, "collections.html", collections=data)


@router.get("/collections/{name}")
@page
async def collection(request: Request, name: str, svc: Svc, offset: Offset = 0) -> Response:
    s = signed_in(request, svc)
    c = await routes_kb.collection(name, svc, s.key, offset=offset, limit=100)
    return render(request, "collection.html", c=c, offset=offset, hits=None, query="",
                  mode=svc.settings.search_mode)


@router.post("/collections/{name}/search")
@page
async def search(request: Request, name: str, svc: Svc,
                 query: Annotated[str, Form(min_length=1, max_length=2000)],
                 mode: Annotated[Mode, Form()] = "hybrid",
                 k: Annotated[int, Form(ge=1, le=50)] = 5, csrf: Csrf = "") -> Response:
    """The playground: a search changes nothing, but it spends the key's rate limit."""
    s = signed_in(request, svc, csrf, change=True)
    req = SearchRequest.model_validate({"query": query, "mode": mode, "k": k})
    found = await routes_native.search(name, req, svc, s.key)
    return render(request, "hits.html", hits=found["data"], query=query, mode=mode)


@router.post("/collections/{name}/documents")
@page
async def upload(request: Request, name: str, svc: Svc,
                 files: Annotated[list[UploadFile], File()], csrf: Csrf = "") -> Response:
    s = signed_in(request, svc, csrf, change=True)
    job = await routes_native.upload(name, files, svc, s.key)
    return render(request, "job.html", job=job, name=name)


@router.get("/collections/{name}/jobs/{job_id}")
@page
async def job(request: Request, name: str, job_id: str, svc: Svc) -> Response:
    """Polled by the upload's progress box until the job is done or failed."""
    s = signed_in(request, svc)
    found = await routes_native.job(name, job_id[:64], svc, s.key)
    return render(request, "job.html", job=found, name=name)


@router.get("/apps")
@page
async def apps(request: Request, svc: Svc) -> Response:
    s = signed_in(request, svc)
    data = (await routes_native.apps(svc, s.key))["data"]
    return render(request, "apps.html", apps=data, spec="", error=None)


@router.post("/apps")
@page
async def deploy(request: Request, svc: Svc,
                 spec: Annotated[str, Form(min_length=1, max_length=200_000)],
                 csrf: Csrf = "") -> Response:
    """A spec that does not validate comes back in the form with the error above it."""
    s = signed_in(request, svc, csrf, change=True)
    try:
        made = await routes_native.deploy(DeployRequest(spec=spec), svc, s.key)
    except InputError as exc:
        status, _, _ = describe(exc)
        data = (await routes_native.apps(svc, s.key))["data"]
        return render(request, "apps.html", status, apps=data, spec=spec,
                      error={"message": exc.message, "hint": exc.hint})
    return RedirectResponse(f"/console/apps/{made['name']}?deployed={made['version']}", 303)


@router.get("/apps/{name}")
@page
async def app(request: Request, name: str, svc: Svc,
              a: Annotated[int | None, Query(ge=1, le=2**31)] = None,
              b: Annotated[int | None, Query(ge=1, le=2**31)] = None,
              deployed: Annotated[int | None, Query(ge=1, le=2**31)] = None) -> Response:
    s = signed_in(request, svc)
    versions = await routes_kb.app_versions(name, svc, s.key)
    diff = (await routes_kb.app_diff(name, svc, s.key, a=a, b=b))["diff"] if a and b else None
    plan: dict[str, Any] | None = None
    try:
        plan = await routes_kb.app_plan(name, svc, s.key)
    except AlicerceError as exc:  # a version that no longer compiles is still shown
        plan = {"error": exc.message}
    return render(request, "app.html", v=versions, diff=diff, a=a, b=b, plan=plan,
                  deployed=deployed)


@router.get("/apps/{name}/card")
@page
async def app_card(request: Request, name: str, svc: Svc) -> Response:
    s = signed_in(request, svc)
    card = await routes_kb.app_card(name, svc, s.key, format="markdown")
    return render(request, "card.html", name=name, text=bytes(card.body).decode())


@router.post("/apps/{name}/label")
@page
async def label_app(request: Request, name: str, svc: Svc,
                    version: Annotated[int, Form(ge=1, le=2**31)],
                    label: Annotated[str, Form(min_length=1, max_length=32)] = "production",
                    csrf: Csrf = "") -> Response:
    s = signed_in(request, svc, csrf, change=True)
    await routes_native.label(name, LabelRequest(version=version, label=label), svc, s.key)
    return RedirectResponse(f"/console/apps/{name}", 303)


@router.post("/apps/{name}/rollback")
@page
async def rollback_app(request: Request, name: str, svc: Svc,
                       label: Annotated[str, Form(min_length=1, max_length=32)] = "production",
                       csrf: Csrf = "") -> Response:
    s = signed_in(request, svc, csrf, change=True)
    await routes_native.rollback(name, RollbackRequest(label=label), svc, s.key)
    return RedirectResponse(f"/console/apps/{name}", 303)


@router.get("/prompts")
@page
async def prompts(request: Request, svc: Svc) -> Response:
    s = signed_in(request, svc)
    data = (await routes_manage.list_prompts(svc, s.key))["data"]
    return render(request, "prompts.html", prompts=data)


@router.get("/prompts/{ref}")
@page
async def prompt(request: Request, ref: str, svc: Svc,
                 a: Annotated[int | None, Query(ge=1, le=2**31)] = None,
                 b: Annotated[int | None, Query(ge=1, le=2**31)] = None) -> Response:
    s = signed_in(request, svc)
    p = await routes_manage.get_prompt(ref, svc, s.key)
    diff = (await routes_manage.diff_prompts(p["name"], a, b, svc, s.key))["diff"] \
        if a and b else None
    return render(request, "prompt.html", p=p, diff=diff, a=a, b=b, models=_models(svc),
                  play=None)


@router.post("/prompts/{name}")
@page
async def new_prompt(request: Request, name: str, svc: Svc,
                     template: Annotated[str, Form(min_length=1, max_length=100_000)],
                     system: Annotated[str, Form(max_length=100_000)] = "",
                     description: Annotated[str, Form(max_length=2000)] = "",
                     csrf: Csrf = "") -> Response:
    s = signed_in(request, svc, csrf, change=True)
    made = await routes_manage.create_prompt(
        name, PromptRequest(template=template, system=system, description=description), svc,
        s.key)
    return RedirectResponse(f"/console/prompts/{made['ref']}", 303)


@router.post("/prompts/{name}/label")
@page
async def label_prompt(request: Request, name: str, svc: Svc,
                       version: Annotated[int, Form(ge=1, le=2**31)],
                       label: Annotated[str, Form(min_length=1, max_length=32)] = "production",
                       csrf: Csrf = "") -> Response:
    s = signed_in(request, svc, csrf, change=True)
    await routes_manage.label_prompt(name, PromptLabelRequest(version=version, label=label),
                                     svc, s.key)
    return RedirectResponse(f"/console/prompts/{name}@{version}", 303)


@router.post("/prompts/{ref}/play")
@page
async def play(request: Request, ref: str, svc: Svc, csrf: Csrf = "") -> Response:
    """Render two prompt versions (or one on two models) with the same inputs and run each
    on its model: the same route as POST /v1/chat/completions, so scopes, rails, limits
    and traces apply."""
    s = signed_in(request, svc, csrf, change=True)
    form = await request.form()
    p = await routes_manage.get_prompt(ref, svc, s.key)
    sides = []
    for side in ("a", "b"):
        version, model = str(form.get(f"version_{side}", "")), str(form.get(f"model_{side}", ""))
        if not version or not model:
            continue
        target = await routes_manage.get_prompt(f"{p['name']}@{version[:12]}", svc, s.key)
        values = {v: str(form.get(f"var_{v}", ""))[:20_000] for v in target["variables"]}
        rendered = svc.alc.prompts.get(target["ref"]).render(**values)
        req = ChatRequest.model_validate({
            "model": model[:200], "max_tokens": _int(form.get("max_tokens"), 256),
            "temperature": _float(form.get("temperature"), 0.2),
            "messages": [{"role": m.role, "content": m.content} for m in rendered]})
        out = await routes_openai.chat_completions(req, request, svc, s.key)
        sides.append({"side": side.upper(), "ref": target["ref"], "model": model,
                      "messages": [{"role": m.role, "content": m.content} for m in rendered],
                      "answer": out["choices"][0]["message"]["content"],
                      "usage": out.get("usage", {})})
    if not sides:
        raise InputError("choose a version and a model for at least one side",
                         hint="fill in A (and B to compare)")
    return render(request, "play.html", sides=sides)


def _models(svc: Any) -> list[str]:
    return sorted(svc.model_names)


def _int(value: Any, default: int) -> int:
    try:
        return max(1, min(int(str(value)), 4096))
    except ValueError:
        return default


def _float(value: Any, default: float) -> float:
    try:
        return max(0.0, min(float(str(value)), 2.0))
    except ValueError:
        return default
