"""The chat page (one HTML file and a little JS, no build step) and the API reference at
/docs: Swagger UI's assets are vendored (swagger-ui-dist 5.35.0, Apache-2.0, its licence in
static/swagger-ui.LICENSE), so the page works offline; its validator badge, which would call
out to swagger.io, is off."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

from alicerce.errors import NotFoundError

router = APIRouter(include_in_schema=False)
_TYPES = {"chat.js": "text/javascript; charset=utf-8", "chat.css": "text/css; charset=utf-8",
          "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
          "swagger-ui.css": "text/css; charset=utf-8", "favicon.svg": "image/svg+xml"}


def _read(name: str) -> str:
    return resources.files("alicerce.server").joinpath("static", name).read_text("utf-8")


@router.get("/")
async def page() -> HTMLResponse:
    return HTMLResponse(_read("index.html"))


@router.get("/docs")
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="Alicerce API",
                               swagger_js_url="/static/swagger-ui-bundle.js",
                               swagger_css_url="/static/swagger-ui.css",
                               swagger_favicon_url="/static/favicon.svg",
                               swagger_ui_parameters={"validatorUrl": None})


@router.get("/favicon.ico")
async def favicon() -> Response:
    return Response(_read("favicon.svg"), media_type="image/svg+xml",
                    headers={"Cache-Control": "max-age=86400"})


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in _TYPES:
        raise NotFoundError(f"no static file {name!r}")
    return Response(_read(name), media_type=_TYPES[name],
                    headers={"Cache-Control": "no-cache"})
