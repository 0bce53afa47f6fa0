"""Request dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from alicerce.access.keys import ApiKey
from alicerce.server.service import Service


def service(request: Request) -> Service:
    return cast(Service, request.app.state.service)


def caller(request: Request) -> ApiKey:
    """The API key of this request (every scope when auth is off, which needs loopback)."""
    return service(request).authenticate(request.headers.get("authorization"))


def no_cache(request: Request) -> bool:
    """`Cache-Control: no-cache` asks for a fresh answer, as in HTTP."""
    return "no-cache" in request.headers.get("cache-control", "").lower()


Svc = Annotated[Service, Depends(service)]
Key = Annotated[ApiKey, Depends(caller)]
