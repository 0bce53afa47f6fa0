"""Every error leaves the server in OpenAI's shape: {"error": {message, type, param, code}}.

The status comes from Alicerce's error tree, so the core never knows about HTTP.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from alicerce.errors import (
    AccessError,
    AlicerceError,
    BusyError,
    ForbiddenError,
    InputError,
    NotFoundError,
    OverloadedError,
    RateLimitError,
    StoreUnavailableError,
)

log = logging.getLogger("alicerce.server")

# (status, OpenAI error type, code), most specific class first.
_STATUS: tuple[tuple[type[AlicerceError], int, str, str], ...] = (
    (NotFoundError, 404, "invalid_request_error", "not_found"),
    (InputError, 400, "invalid_request_error", "invalid_value"),
    (ForbiddenError, 403, "permission_error", "forbidden"),
    (AccessError, 401, "authentication_error", "invalid_api_key"),
    (RateLimitError, 429, "rate_limit_error", "rate_limit_exceeded"),
    (OverloadedError, 503, "server_overloaded", "queue_full"),
    (StoreUnavailableError, 503, "server_error", "store_unavailable"),
)


# A failing backend's code names the part that failed, never a Python class.
_BACKEND = {"GeneratorError": "model_error", "JudgeError": "model_error",
            "EmbedderError": "embedding_error", "StoreError": "store_error",
            "IngestError": "ingest_error", "ChainError": "chain_error",
            "ConfigError": "configuration_error"}
# Starlette's own errors (routing, body parsing) in OpenAI's `code` vocabulary.
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def describe(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, error body, headers) for any exception; unknown ones are a bare 500."""
    headers: dict[str, str] = {}
    if isinstance(exc, AlicerceError):
        status, kind, code = 500, "server_error", _BACKEND.get(type(exc).__name__,
                                                               "server_error")
        for cls, s, k, c in _STATUS:
            if isinstance(exc, cls):
                status, kind, code = s, k, c
                break
        if isinstance(exc, BusyError | StoreUnavailableError):
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        message = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
        if status == 500:
            log.error("request failed: %s", message)
        return status, _body(message, kind, None, code), headers
    log.exception("unexpected error", exc_info=exc)
    return 500, _body("internal error; the server log has the details", "server_error",
                      None, "internal_error"), headers


def _body(message: str, kind: str, param: str | None, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


PageError = Callable[[Request, int, str], Response]


def install(app: FastAPI, page_error: PageError | None = None) -> None:
    """The API's errors as JSON; under /console, as the console's error page
    (`page_error`), so a browser never shows raw JSON."""

    def page(request: Request, status: int, body: dict[str, Any]) -> Response | None:
        if page_error is None or not request.url.path.startswith("/console"):
            return None
        return page_error(request, status, str(body["error"]["message"]))

    @app.exception_handler(AlicerceError)
    async def on_alicerce(request: Request, exc: AlicerceError) -> Response:
        status, body, headers = describe(exc)
        return page(request, status, body) or JSONResponse(body, status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        if first.get("type") == "extra_forbidden":
            message = f"unknown field {param!r}; check its spelling against the API reference"
        elif first.get("type") == "json_invalid":  # its loc is a byte offset, not a field
            where = f" at byte {loc[0]}" if loc else ""
            message = (f"the body is not valid JSON{where}: {first.get('msg')}; send a JSON "
                       "object with Content-Type: application/json")
            param = None
        elif first.get("type") == "model_attributes_type":
            message = "the body is not a JSON object: " + str(first.get("msg"))
        else:
            message = f"{param or 'body'}: {first.get('msg')}"
        if len(errors) > 1:
            message += f" (and {len(errors) - 1} more problem(s))"
        body = _body(message, "invalid_request_error", param, "invalid_value")
        return page(request, 400, body) or JSONResponse(body, 400)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> Response:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = str(exc.detail)
        if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI's generic parse error
            message = ("the body is not UTF-8 text; encode the JSON as UTF-8 "
                       f"({exc.__cause__.reason} at byte {exc.__cause__.start})")
        code = _HTTP_CODES.get(exc.status_code, "invalid_value")
        body = _body(message, kind, None, code)
        return page(request, exc.status_code, body) or JSONResponse(
            body, exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def on_other(_: Request, exc: Exception) -> JSONResponse:
        status, body, headers = describe(exc)
        return JSONResponse(body, status, headers=headers)
