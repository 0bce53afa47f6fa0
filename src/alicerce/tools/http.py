"""The http_get tool: GET from hosts the app allows by exact name, and nothing else.

The URL's host (and port, when the allow-list names one) must be on the list; a redirect is
followed only to an allowed host (at most three); bodies stop at `max_bytes` and requests at
`timeout_s`. No cookies, credentials or caller headers are ever sent. HTML comes back as its
text.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from http.client import HTTPMessage
from typing import IO, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field
from selectolax.lexbor import LexborHTMLParser

from alicerce.errors import InputError
from alicerce.tools.base import Tool, ToolFailed, strict
from alicerce.version import __version__

MAX_REDIRECTS = 3


class HttpOptions(BaseModel):
    allow: list[str] = Field(min_length=1)
    max_bytes: int = Field(200_000, ge=1_000, le=5_000_000)
    timeout_s: float = Field(10.0, gt=0, le=60)


def allowed(url: str, allow: list[str]) -> str:
    """`url` when its scheme is http(s) and its host (or host:port) is allowed; else the
    reason, as ToolFailed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ToolFailed(f"only http and https URLs, not {parts.scheme or 'none'!r}")
    host = (parts.hostname or "").lower()
    if parts.username or parts.password:
        raise ToolFailed("URLs with credentials are not allowed")
    try:
        port = parts.port
    except ValueError:
        raise ToolFailed(f"{url!r} has an invalid port") from None
    names = {a.lower() for a in allow}
    if host not in names and f"{host}:{port}" not in names:
        raise ToolFailed(f"the host {host or '(none)'!r} is not allowed; allowed: "
                         f"{', '.join(sorted(names))}")
    return url


class _Redirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, allow: list[str]) -> None:
        self.allow, self.count = allow, 0

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                         msg: str, headers: HTTPMessage, newurl: str
                         ) -> urllib.request.Request | None:
        self.count += 1
        if self.count > MAX_REDIRECTS:
            raise ToolFailed(f"more than {MAX_REDIRECTS} redirects")
        allowed(newurl, self.allow)  # a redirect elsewhere is refused, not followed
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def http_get(options: dict[str, Any]) -> Tool:
    opts = HttpOptions.model_validate(options)
    for host in opts.allow:
        if "/" in host or not host.strip():
            raise InputError(f"http_get: allow entries are host names (host or host:port), "
                             f"not {host!r}", hint="e.g. allow: [intranet.example.com]")

    def run(url: str) -> str:
        allowed(url, opts.allow)
        opener = urllib.request.build_opener(_Redirects(opts.allow))
        opener.addheaders = [("User-Agent", f"alicerce/{__version__}")]
        try:
            with opener.open(url, timeout=opts.timeout_s) as resp:
                body = resp.read(opts.max_bytes + 1)
                kind = resp.headers.get_content_type()
                charset = resp.headers.get_content_charset() or "utf-8"
                status = resp.status
        except urllib.error.HTTPError as exc:
            raise ToolFailed(f"the server answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ToolFailed(f"could not fetch {url}: {reason}") from None
        cut = len(body) > opts.max_bytes
        text = body[: opts.max_bytes].decode(charset, errors="replace")
        if kind == "text/html":
            tree = LexborHTMLParser(text)
            for node in tree.css("script,style,noscript,template,svg"):
                node.decompose()
            root = tree.body or tree.root
            text = " ".join(root.text(separator=" ").split()) if root is not None else ""
        elif not (kind.startswith("text/") or kind.endswith("json") or kind.endswith("xml")):
            raise ToolFailed(f"the response is {kind}, not text")
        return f"HTTP {status}\n{text}" + (f"\n(cut at {opts.max_bytes} bytes)" if cut else "")

    args = strict(url=(str, Field(description="an http(s) URL on an allowed host",
                                  max_length=2000)))
    return Tool("http_get", "Fetches a web page or API (GET) from these hosts only: "
                + ", ".join(opts.allow), args, run, meta={"allow": list(opts.allow)})
