"""The FastAPI application: ``/v1`` API, ``/healthz``, docs, and the dashboard at the root."""

from __future__ import annotations

import gc
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.api import datasets, studies
from service.http.api.deps import Authenticator
from service.http.asgi import HTTPMiddleware
from service.http.cache import TTLCache
from service.http.dashboard import dashboard_app
from service.settings import Settings
from service.store.auth import any_tokens
from service.store.db import DATABASE_ERRORS, Database
from service.store.errors import Conflict, NotFound
from service.store.trials import make_storage

log = logging.getLogger("regtune")
UPLOAD_OVERHEAD = 64 * 1024  # multipart framing and form fields around the file
DATABASE_RETRY_AFTER_S = 5


class BodyLimit(HTTPMiddleware):
    """Refuse request bodies over ``limit`` bytes with 413 before they are parsed or spooled."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and int(length) > self.limit:
            await self.refuse(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await self.refuse(scope, receive, send)

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body over the limit of {self.limit} bytes"}, status_code=413
        )
        await response(scope, receive, send)


class BodyTooLarge(Exception):
    pass


class ServerTiming(HTTPMiddleware):
    """``Server-Timing: app;dur=<ms>`` on every response: the time from the request's arrival
    in the app to its response headers, so that a client (the load script, a browser's
    network tab) can tell the server's share of a latency from the network's and its own."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1000
                headers = [*message.get("headers", []), (b"server-timing", b"app;dur=%.1f" % ms)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed)


ECHO_DEPTH = 16  # how deep a 422 echoes the offending input back


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` with what JSON cannot carry made printable: NaN/inf as text, lone surrogates
    escaped, structures deeper than ``ECHO_DEPTH`` elided (a hostile body must get its 422,
    not a 500 from rendering the error)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict | list | tuple) and depth >= ECHO_DEPTH:
        return "…"
    if isinstance(value, dict):
        return {json_safe(k, depth + 1): json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value]
    return value


async def validation_errors(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body, safe to render whatever the request held."""
    return JSONResponse({"detail": jsonable_encoder(json_safe(exc.errors()))}, status_code=422)


async def http_errors(request: Request, exc: HTTPException) -> Response:
    """Starlette's handler, with a precise message for a body nested too deeply to parse."""
    if exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):
        return JSONResponse(
            {"detail": "the JSON body is nested too deeply to parse"}, status_code=400
        )
    return await http_exception_handler(request, exc)


class ApiFallback:
    """What no route of the API (``/v1``, ``/healthz``) answers: JSON 405 (with ``Allow``)
    when the path exists with other methods, else 404, never the dashboard's pages or its
    "read-only" 403 (it owns the rest of the root). An ASGI app, not a function, so that its
    route takes every method, TRACE included (a function's route takes only GET)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.answer(Request(scope, receive))(scope, receive, send)

    def answer(self, request: Request) -> JSONResponse:
        path = request.url.path
        allowed = [
            method
            for method in ("DELETE", "GET", "PATCH", "POST", "PUT")
            if any(
                route.matches({**request.scope, "method": method})[0] == Match.FULL
                for route in request.app.router.routes
                if not isinstance(route, Mount)
                and not isinstance(getattr(route, "endpoint", None), ApiFallback)
            )
        ]
        if allowed:
            return JSONResponse(
                {"detail": f"{request.method} is not allowed on {path}; use {', '.join(allowed)}"},
                status_code=405,
                headers={"Allow": ", ".join(allowed)},
            )
        return JSONResponse(
            {"detail": f"no such path {path} in the API (its paths are listed at /docs)"},
            status_code=404,
        )


def create_app(settings: Settings) -> FastAPI:
    db = Database(settings)
    db.migrate()
    storage = make_storage(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        with db.read() as session:
            if not any_tokens(session):
                log.warning(
                    "no API token exists: the API and dashboard are open to anyone who "
                    "can reach %s (create one with 'regtune token create NAME')",
                    settings.host,
                )
        # Everything loaded so far (torch, Optuna, the app) lives as long as the process: out
        # of the collector's sight, a full collection no longer walks its ~340,000 objects
        # (160 ms measured on the 2-core machine, every request in flight waiting meanwhile).
        gc.collect()
        gc.freeze()
        yield
        db.dispose()

    app = FastAPI(
        title="regtune",
        version="1",
        lifespan=lifespan,
        description="Regularization tuning of PyTorch networks with k-fold CV.",
    )
    app.state.settings, app.state.db, app.state.storage = settings, db, storage
    app.state.authenticator = Authenticator(db, settings.auth_cache_s)
    app.state.status_cache = TTLCache[Any](settings.status_cache_s)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.router.routes.append(Route("/healthz", ApiFallback(), include_in_schema=False))

    # Starlette types a handler as taking any Exception; these take their own subclass.
    app.add_exception_handler(RequestValidationError, validation_errors)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, http_errors)  # type: ignore[arg-type]

    @app.exception_handler(NotFound)
    def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Conflict)
    def _conflict(request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        # An outage is the server's state, not a bug: say so, and when to come back.
        log.warning("database unavailable: %s", str(exc).splitlines()[0][:200])
        return JSONResponse(
            {"detail": "the database is unavailable; retry shortly"},
            status_code=503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
        )

    for error in DATABASE_ERRORS:
        app.add_exception_handler(error, _database_unavailable)

    app.include_router(datasets.router)
    app.include_router(studies.router)
    for path in ("/v1", "/v1/{rest:path}"):  # after every /v1 route: what they leave
        app.router.routes.append(Route(path, ApiFallback(), include_in_schema=False))
    # optuna-dashboard requests /api/* and /static/* from the root, so it takes the rest.
    app.mount("/", dashboard_app(db, storage))
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + UPLOAD_OVERHEAD)
    app.add_middleware(ServerTiming)
    return app
