"""The FastAPI app factory: nothing is built at import time, everything from one Settings."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute

from alicerce.config import Settings
from alicerce.errors import ConfigError
from alicerce.platform import Alicerce
from alicerce.server import (
    console,
    errors,
    routes_chains,
    routes_evals,
    routes_explain,
    routes_kb,
    routes_manage,
    routes_native,
    routes_openai,
    ui,
)
from alicerce.server.body_limit import BodyLimit
from alicerce.server.console.render import error_page
from alicerce.server.service import Service

log = logging.getLogger("alicerce.server")


def check_bind(host: str, auth: bool) -> None:
    """Refuse to expose a server without keys: auth may be off only on loopback."""
    if auth:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ConfigError(f"refusing to serve on {host} with auth off: anyone who can reach "
                          "it could read every collection",
                          hint="keep auth on (create keys with `alicerce keys create`), or "
                               "bind 127.0.0.1")


def create_app(settings: Settings, alicerce: Alicerce | None = None) -> FastAPI:
    """The server for `settings` (or an already open `alicerce`, which stays the caller's)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        alc = alicerce or Alicerce.open(settings=settings)
        svc = Service(alc)
        app.state.service = svc
        svc.uploads.resume()
        svc.batches.resume()
        svc.evaluations.resume()
        warm = threading.Thread(target=svc.warm_up, daemon=True, name="alicerce-warm-up")
        warm.start()
        stop = threading.Event()
        monitor = threading.Thread(target=svc.monitor_loop, args=(stop,), daemon=True,
                                   name="alicerce-monitor")
        if settings.monitor_interval_s:
            monitor.start()
        adapters = threading.Thread(target=svc.adapter_loop, args=(stop,), daemon=True,
                                    name="alicerce-adapters")
        if settings.adapter_poll_s:
            adapters.start()
        if not settings.auth:
            log.warning("auth is off: every caller may use every collection (loopback only)")
        try:
            yield
        finally:
            await svc.background.stop()
            # A model still loading when the process exits can crash it (native code
            # torn down under a running thread): let the load finish first.
            warm.join(timeout=120)
            stop.set()
            for loop in (monitor, adapters):
                if loop.is_alive():
                    loop.join(timeout=120)
            svc.limiter.close()
            svc.leases.close()
            svc.sessions.close()
            if alicerce is None:
                alc.close()

    app = FastAPI(title="Alicerce", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # /docs is served offline by ui.py
                  description="OpenAI-compatible API over your documents, with citations.")
    errors.install(app, error_page)
    app.include_router(routes_openai.router)
    app.include_router(routes_native.router)
    app.include_router(routes_chains.router)
    app.include_router(routes_evals.router)
    app.include_router(routes_kb.router)
    app.include_router(routes_explain.router)
    app.include_router(routes_manage.router)
    app.include_router(ui.router)
    app.include_router(console.router)
    app.add_middleware(BodyLimit, limit=settings.max_body_kb * 1024,
                       upload_limit=int(settings.max_upload_mb * 1024 * 1024) + 64 * 1024)

    @app.middleware("http")
    async def observe(request: Request,
                      call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        path = route_of(request)
        svc: Service | None = getattr(request.app.state, "service", None)
        if svc is not None and path not in ("/metrics", "/static/{name}"):
            app_label = getattr(request.state, "app", "")
            svc.metrics.requests.labels(path, app_label, str(response.status_code)).inc()
            svc.metrics.latency.labels(path, app_label).observe(time.perf_counter() - started)
            if response.status_code >= 400:
                svc.metrics.errors.labels(str(response.status_code)).inc()
                if response.status_code == 503:
                    svc.metrics.rate_limited.labels("queue").inc()
        return response

    return app


def route_of(request: Request) -> str:
    """The route template a request was for; a request answered before routing (a 413 on
    its size) is matched here, so only paths no route serves count as "unmatched"."""
    route = request.scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "unmatched"))
    path = request.scope.get("path", "")
    return next((t for regex, t in TEMPLATES if regex.match(path)), "unmatched")


TEMPLATES = [(r.path_regex, r.path) for router in (routes_openai.router, routes_native.router,
                                                   routes_chains.router, routes_evals.router,
                                                   routes_kb.router, routes_explain.router,
                                                   routes_manage.router,
                                                   ui.router, console.router)
             for r in router.routes if isinstance(r, APIRoute)]
