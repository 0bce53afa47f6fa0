"""Who is using the console: the session behind the request's cookie, checked on every
request (and its CSRF token on every change)."""

from __future__ import annotations

from fastapi import Request

from alicerce.access.sessions import Session
from alicerce.errors import NotFoundError
from alicerce.server.console.session import COOKIE, check_csrf, signed_out
from alicerce.server.service import LOCAL, Service


def signed_in(request: Request, svc: Service, csrf: str | None = None,
              change: bool = False) -> Session:
    """The session's key, looked up again (a revoked key is signed out at once). With
    `change`, the request must carry the session's CSRF token."""
    token = request.cookies.get(COOKIE, "")
    found = svc.sessions.find(token) if token else None
    if found is None:
        raise signed_out()
    key_id, expected, lang = found
    if key_id == LOCAL.id and not svc.settings.auth:
        key = LOCAL
    else:
        try:
            key = svc.alc.keys.get(key_id)
        except NotFoundError:
            raise signed_out() from None
        if key.revoked_at is not None or key_id == LOCAL.id:
            svc.sessions.end(token)
            raise signed_out("the key of this session was revoked")
    if change:
        check_csrf(request, expected, csrf)
    session = Session(key, expected, lang)
    request.state.session, request.state.lang = session, lang
    return session
