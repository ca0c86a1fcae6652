"""The service's own ASGI middleware share one rule: HTTP requests are theirs to handle, every
other scope (lifespan, websockets) passes through untouched."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class HTTPMiddleware:
    """A pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streamed bodies) whose
    :meth:`http` sees each HTTP request, with ``self.app`` the application behind it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError
