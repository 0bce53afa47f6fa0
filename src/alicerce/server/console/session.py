"""Console sign-in: an API key is presented once and exchanged for a server-side session.

The browser keeps only a random session token in an HttpOnly, SameSite=Strict cookie scoped
to /console; the database keeps its sha256, the key's id, a CSRF token and an expiry. Every
request looks the key up again, so a revoked key's sessions stop at once. Every form and
htmx request carries the CSRF token (synchronizer pattern) and is refused without it; the
sign-in form has its own token in a short-lived cookie (double submit), so another site
cannot sign a browser in either. Sessions live in the home's database, so replicas behind a
load balancer share them.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import Response

from alicerce.access.sessions import Lang
from alicerce.errors import AccessError, ForbiddenError

COOKIE = "alicerce_session"
LOGIN_COOKIE = "alicerce_signin"


def browser_lang(request: Request) -> Lang:
    """Portuguese for browsers that ask for it first, else English."""
    first = request.headers.get("accept-language", "").split(",")[0].strip().lower()
    return "pt" if first.startswith("pt") else "en"


def set_cookie(request: Request, response: Response, name: str, value: str,
               max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/console", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def check_csrf(request: Request, expected: str, sent: str | None) -> None:
    """The token from the form field or the X-CSRF-Token header; and, when the browser
    says where the request comes from, that it is this server."""
    given = sent or request.headers.get("x-csrf-token", "")
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ForbiddenError("the form's security token is missing or stale",
                             hint="reload the page and try again")
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise ForbiddenError("a form from another site was refused",
                             hint="use the console's own pages")


def signed_out(message: str = "sign in to use the console") -> AccessError:
    return AccessError(message, hint="open /console/login and sign in with an API key")
