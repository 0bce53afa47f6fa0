"""Console pages: sign-in, the overview, traces (a filterable list that shows new traces as
they arrive, and each trace as a tree and a timeline of its steps, with its feedback).

Every page reads through the same route functions as the HTTP API (the scopes and the
collections of the session's key apply unchanged); every change also checks the CSRF token.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from alicerce.access.sessions import TTL_S, Lang
from alicerce.errors import AccessError, AlicerceError
from alicerce.explain.counterfactual import Counterfactual
from alicerce.explain.explanation import Explanation
from alicerce.explain.traced import DEFAULT_BUDGET
from alicerce.server import routes_evals, routes_explain, routes_kb, routes_native
from alicerce.server.console.auth import signed_in
from alicerce.server.console.render import page, render
from alicerce.server.console.session import (
    COOKIE,
    LOGIN_COOKIE,
    browser_lang,
    check_csrf,
    set_cookie,
)
from alicerce.server.console.spans import tree
from alicerce.server.deps import Svc
from alicerce.server.routes_explain import MAX_BUDGET, CounterfactualRequest, ExplainRequest
from alicerce.server.service import LOCAL
from alicerce.server.wire import FeedbackRequest

router = APIRouter(prefix="/console", include_in_schema=False)
Text = Annotated[str, Form(max_length=20_000)]
Csrf = Annotated[str, Form(max_length=200)]


def _next(target: str) -> str:
    """Only a console path: never a redirect to another site."""
    return target if target.startswith("/console") and "//" not in target else "/console"


@router.get("/login")
async def login_form(request: Request, svc: Svc, next: str = "/console") -> Response:
    token = secrets.token_urlsafe(24)
    request.state.lang = browser_lang(request)
    response = render(request, "login.html", csrf=token, next=_next(next[:500]),
                      auth=svc.settings.auth)
    set_cookie(request, response, LOGIN_COOKIE, token, 900)
    return response


@router.post("/login")
async def login(request: Request, svc: Svc, csrf: Csrf = "", lang: Annotated[
        Lang, Form()] = "en", key: Annotated[str, Form(max_length=500)] = "",
                next: Annotated[str, Form(max_length=500)] = "/console") -> Response:
    request.state.lang = lang
    check_csrf(request, request.cookies.get(LOGIN_COOKIE, ""), csrf)
    response: Response
    try:
        found = svc.authenticate(f"Bearer {key.strip()}" if svc.settings.auth else None)
    except AccessError as exc:
        token = secrets.token_urlsafe(24)
        response = render(request, "login.html", 401, csrf=token, next=_next(next),
                          auth=True, message=exc.message)
        set_cookie(request, response, LOGIN_COOKIE, token, 900)
        return response
    session = svc.sessions.create(found.id if found is not LOCAL else LOCAL.id, lang)
    svc.alc.keys.audit(found.id, "console.sign_in", found.id, {})
    response = RedirectResponse(_next(next), 303)
    set_cookie(request, response, COOKIE, session, int(TTL_S))
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    return response


@router.post("/logout")
@page
async def logout(request: Request, svc: Svc, csrf: Csrf = "") -> Response:
    signed_in(request, svc, csrf, change=True)
    svc.sessions.end(request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/console/login", 303)
    response.delete_cookie(COOKIE, path="/console")
    return response


@router.post("/lang")
@page
async def set_lang(request: Request, svc: Svc, lang: Annotated[Lang, Form()],
                   csrf: Csrf = "", next: Annotated[str, Form(max_length=500)] = "/console"
                   ) -> Response:
    signed_in(request, svc, csrf, change=True)
    svc.sessions.set_lang(request.cookies.get(COOKIE, ""), lang)
    return RedirectResponse(_next(next), 303)


@router.get("")
@page
async def home(request: Request, svc: Svc) -> Response:
    s = signed_in(request, svc)
    key = s.key
    recent = (await routes_native.traces(svc, key, limit=10))["data"] \
        if set(key.scopes) & {"ask", "read", "admin"} else []
    runs = (await routes_evals.list_runs(svc, key, limit=5))["data"] if key.sees_all else []
    queue = (await routes_evals.review_queue(svc, key, limit=100))["data"] \
        if key.sees_all else []
    return render(request, "home.html", apps=svc.apps(key),
                  collections=[c for c in svc.alc.collections() if key.may_use(c.name)],
                  recent=recent, runs=runs, queued=len(queue))


Feedback = Literal["up", "down", "none", "any"]


@router.get("/traces")
@page
async def traces(request: Request, svc: Svc, app: Annotated[str, Query(max_length=200)] = "",
                 status: Literal["", "ok", "error"] = "", feedback: Feedback = "any",
                 caller: Annotated[str, Query(max_length=64)] = "",
                 version: Annotated[int | None, Query(ge=1, le=2**31)] = None,
                 since: Literal["", "1h", "24h", "7d", "30d"] = "",
                 before: Annotated[float | None, Query(ge=0)] = None) -> Response:
    """The list; htmx asks for the rows alone every few seconds (first page only)."""
    s = signed_in(request, svc)
    since_s = {"1h": 3600.0, "24h": 86400.0, "7d": 7 * 86400.0, "30d": 30 * 86400.0}.get(since)
    body = await routes_native.traces(svc, s.key, app=app or None, since_s=since_s,
                                      feedback=feedback, status=status or None,
                                      caller=caller or None, app_version=version,
                                      before=before, limit=50)
    rows = body["data"]
    filters = {"app": app, "version": version, "status": status, "feedback": feedback,
               "caller": caller, "since": since}
    template = "traces_rows.html" if request.headers.get("hx-request") == "true" \
        and request.headers.get("hx-target") == "trace-rows" else "traces.html"
    return render(request, template, rows=rows, filters=filters, before=before,
                  apps=svc.apps(s.key), older=rows[-1]["at"] if len(rows) == 50 else None)


@router.get("/traces/{trace_id}")
@page
async def trace(request: Request, trace_id: str, svc: Svc) -> Response:
    s = signed_in(request, svc)
    t = await routes_native.trace(trace_id[:64], svc, s.key)
    cid = svc.alc.conversations.of_trace(t["id"])
    session = None
    if cid is not None:  # the session view: every turn with its annotations
        try:
            session = await routes_kb.conversation(cid, svc, s.key)
        except AlicerceError:
            session = None
    why = svc.alc.explanations.store.latest(t["id"])
    explainable = any(sp["name"] == "prompt" and "sources" in sp["attrs"]
                      for sp in t["spans"]) and not t["abstained"]
    counterfactuals = [Counterfactual.from_dict(c) for c in svc.alc.counterfactuals.of(t["id"])]
    return render(request, "trace.html", tr=t, steps=tree(t["spans"]), session_view=session,
                  why=why, explainable=explainable, counterfactuals=counterfactuals,
                  total_ms=max([t["latency_ms"] or 0.0] + [sp["start_ms"] + sp["ms"]
                                                          for sp in t["spans"]]))


@router.post("/traces/{trace_id}/explain")
@page
async def explain(request: Request, trace_id: str, svc: Svc, csrf: Csrf = "",
                  budget: Annotated[int, Form(ge=1, le=MAX_BUDGET)] = DEFAULT_BUDGET
                  ) -> Response:
    """The trace's answer explained (the same route as the API), shown in place."""
    s = signed_in(request, svc, csrf, change=True)
    req = ExplainRequest.model_validate({"budget": budget})
    body = await routes_explain.explain(trace_id[:64], req, svc, s.key)
    if request.headers.get("hx-request") != "true":
        return RedirectResponse(f"/console/traces/{trace_id[:64]}#why", 303)
    return render(request, "why.html", why=Explanation.from_dict(body))


@router.post("/traces/{trace_id}/counterfactual")
@page
async def counterfactual(request: Request, trace_id: str, svc: Svc, csrf: Csrf = "",
                         change: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """The trace's request asked again with one change (the API's route), shown in place."""
    s = signed_in(request, svc, csrf, change=True)
    req = CounterfactualRequest.model_validate({"change": change})
    body = await routes_explain.counterfactual(trace_id[:64], req, svc, s.key)
    if request.headers.get("hx-request") != "true":
        return RedirectResponse(f"/console/traces/{trace_id[:64]}#what-if", 303)
    return render(request, "counterfactual.html", cf=Counterfactual.from_dict(body))


@router.post("/traces/{trace_id}/feedback")
@page
async def annotate(request: Request, trace_id: str, svc: Svc, csrf: Csrf = "",
                   score: Annotated[int, Form(ge=-1, le=1)] = 0, comment: Text = "",
                   reference: Text = "") -> Response:
    """An annotation (comment, thumbs, the right answer) on a trace, as feedback."""
    s = signed_in(request, svc, csrf, change=True)
    req = FeedbackRequest.model_validate({"trace_id": trace_id[:64], "score": score,
                                          "comment": comment, "reference": reference})
    await routes_native.feedback(req, svc, s.key)
    return RedirectResponse(f"/console/traces/{trace_id[:64]}#feedback", 303)
