"""Rendering console pages: Jinja2 with autoescaping everywhere (trace contents, documents
and tool outputs are user input), the interface text in the session's language, and headers
that keep the page to its own origin (a Content-Security-Policy with no inline script).

A page that fails with an Alicerce error shows the error's message and hint in place, with
its HTTP status, instead of the API's JSON; a request without a session goes to sign-in.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import ValidationError

from alicerce.errors import AccessError, AlicerceError, ForbiddenError
from alicerce.server.console.i18n import translate
from alicerce.server.errors import describe

P = ParamSpec("P")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "object-src 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY",
           "Cache-Control": "no-store"}

ENV = Environment(loader=PackageLoader("alicerce.server.console", "templates"),
                  autoescape=select_autoescape(default=True, default_for_string=True),
                  trim_blocks=True, lstrip_blocks=True)


def _when(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at)) if at else "-"


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _query(filters: dict[str, Any], **extra: Any) -> str:
    """A URL query from filters, leaving out the empty ones."""
    return urlencode({k: v for k, v in {**filters, **extra}.items() if v not in ("", None)})


ENV.filters.update(when=_when, num=_num, q=lambda s: quote(str(s), safe=""), query=_query)


def render(request: Request, template: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    lang = getattr(request.state, "lang", "en")
    session = getattr(request.state, "session", None)
    body = ENV.get_template(template).render(
        t=lambda key, **kw: translate(lang, key, **kw), lang=lang, session=session,
        path=request.url.path, partial=request.headers.get("hx-request") == "true", **ctx)
    return HTMLResponse(body, status, headers=HEADERS)


def page(fn: Callable[P, Awaitable[Response]]) -> Callable[P, Awaitable[Response]]:
    """Errors become the page's error box (with the status); no session: sign in."""
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
        request = next(a for a in [*args, *kwargs.values()] if isinstance(a, Request))
        try:
            return await fn(*args, **kwargs)
        except AccessError as exc:
            if not isinstance(exc, ForbiddenError):  # signed out, expired or revoked
                return to_sign_in(request)
            status, _, _ = describe(exc)
            return render(request, "error.html", status, message=exc.message, hint=exc.hint)
        except AlicerceError as exc:
            status, _, _ = describe(exc)
            return render(request, "error.html", status, message=exc.message, hint=exc.hint)
        except ValidationError as exc:  # a form value the API's request model refuses
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            return render(request, "error.html", 400, message=f"{where}: {first['msg']}",
                          hint="correct the form and send it again")
    return wrapper


def to_sign_in(request: Request) -> Response:
    target = "/console/login?next=" + quote(request.url.path, safe="/")
    if request.headers.get("hx-request") == "true":  # htmx follows this header, not a 303
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, 303)


def error_page(request: Request, status: int, message: str) -> Response:
    """What errors.install shows under /console: sign-in for 401, else the error page."""
    if status == 401:
        return to_sign_in(request)
    return render(request, "error.html", status, message=message, hint="")
