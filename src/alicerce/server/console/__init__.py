"""The console at /console: server-rendered pages over the same route functions as the HTTP
API, with vendored htmx 2.0.11 and uPlot 1.6.32 (licences in static/THIRD_PARTY_LICENSES.txt),
no build step and nothing from a CDN."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from alicerce.errors import NotFoundError
from alicerce.server.console import pages, pages_evals, pages_kb, pages_ops

_TYPES = {"htmx.min.js": "text/javascript; charset=utf-8",
          "uPlot.iife.min.js": "text/javascript; charset=utf-8",
          "console.js": "text/javascript; charset=utf-8",
          "uPlot.min.css": "text/css; charset=utf-8", "console.css": "text/css; charset=utf-8",
          "THIRD_PARTY_LICENSES.txt": "text/plain; charset=utf-8"}

router = APIRouter(include_in_schema=False)


@router.get("/console/static/{name}")
async def static(name: str) -> Response:
    """A fixed list of files: no path from the request reaches the filesystem."""
    if name not in _TYPES:
        raise NotFoundError(f"no console file {name[:80]!r}")
    data = resources.files("alicerce.server.console").joinpath("static", name).read_bytes()
    return Response(data, media_type=_TYPES[name], headers={
        "Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})


for part in (pages, pages_evals, pages_kb, pages_ops):
    router.include_router(part.router)
