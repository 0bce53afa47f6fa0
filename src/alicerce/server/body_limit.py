"""Request bodies are bounded while they arrive, before authentication or parsing.

A `Content-Length` over the limit is answered 413 at once. A body without one (`Transfer-
Encoding: chunked`) is counted as it streams in: the byte past the limit ends the request with
413, so a client cannot make the server read (or hold) more than the limit, keyed or not.
Uploads get their own, larger limit. This is plain ASGI rather than FastAPI middleware: the
route's body parsing pulls from the `receive` we hand on, so the count sees every byte.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(HTTPException):
    """Raised from `receive` inside the route; the error handlers answer it as a 413."""

    def __init__(self, limit: int) -> None:
        # Connection: close, so the server stops reading the rest instead of draining it
        super().__init__(413, f"the body is over the limit of {limit} bytes; send less, or "
                              "raise max_body_kb (max_upload_mb for uploads)",
                         headers={"Connection": "close"})


def too_large_body(limit: int, size: int | None = None) -> bytes:
    said = f"the body has {size} bytes, over" if size is not None else "the body is over"
    return json.dumps({"error": {
        "message": f"{said} the limit of {limit} bytes; send less, or raise max_body_kb "
                   "(max_upload_mb for uploads)",
        "type": "invalid_request_error", "param": None, "code": "body_too_large"}}).encode()


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int, upload_limit: int) -> None:
        self.app, self.limit, self.upload_limit = app, limit, upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if scope["path"].endswith("/documents") else self.limit
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            size = int(length) if length.isdigit() else -1
            if size > limit or size < 0:
                await _answer(send, 413 if size > limit else 400,
                              too_large_body(limit, size) if size > limit else _bad_length())
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


def _bad_length() -> bytes:
    return json.dumps({"error": {
        "message": "the Content-Length header is not a number of bytes",
        "type": "invalid_request_error", "param": None, "code": "invalid_value"}}).encode()


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
