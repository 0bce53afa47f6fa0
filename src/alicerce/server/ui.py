"""The chat page: one server-rendered HTML file and a little JS, no build step."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from alicerce.errors import NotFoundError

router = APIRouter(include_in_schema=False)
_TYPES = {"chat.js": "text/javascript; charset=utf-8", "chat.css": "text/css; charset=utf-8"}


def _read(name: str) -> str:
    return resources.files("alicerce.server").joinpath("static", name).read_text("utf-8")


@router.get("/")
async def page() -> HTMLResponse:
    return HTMLResponse(_read("index.html"))


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in _TYPES:
        raise NotFoundError(f"no static file {name!r}")
    return Response(_read(name), media_type=_TYPES[name],
                    headers={"Cache-Control": "no-cache"})
