"""optuna-dashboard behind the service's tokens, read-only, showing a tenant only its studies.

optuna-dashboard has no authentication and has write endpoints (delete a study, tell a
trial, migrate the schema), and it lists every study in the storage. This ASGI guard sits in
front of it: only GET/HEAD pass; the caller's tenant comes from the bearer token or, for a
browser, from a cookie set by visiting ``/dashboard?token=…``; study-scoped URLs of other
tenants answer 404, and the study list is filtered to the tenant's own studies.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from a2wsgi import WSGIMiddleware
from optuna.storages import RDBStorage
from optuna_dashboard import wsgi
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.api.deps import TOKEN_COOKIE, authenticate, presented_token
from service.http.asgi import HTTPMiddleware
from service.store.auth import tenant_of
from service.store.db import Database
from service.store.tables import StudyRecord

# Every dashboard URL that names a study by Optuna's integer id.
STUDY_SCOPED = re.compile(r"^/(?:api/studies|csv|artifacts|api/artifacts)/(\d+)(?:/|$)")
LOGIN_PAGE = """<!doctype html><title>regtune dashboard</title>
<body style="font-family:sans-serif;max-width:30em;margin:4em auto">
<h1>regtune dashboard</h1><p>{message}</p>
<form method="get" action="/dashboard"><input name="token" type="password" size="48"
placeholder="rt_…" autofocus> <button>Open</button></form>"""


def dashboard_app(db: Database, storage: RDBStorage) -> ASGIApp:
    return DashboardGuard(WSGIMiddleware(wsgi(storage)), db)  # type: ignore[arg-type]


class DashboardGuard(HTTPMiddleware):
    def __init__(self, app: ASGIApp, db: Database) -> None:
        super().__init__(app)
        self.db = db

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        verdict = await self.check(request)
        if isinstance(verdict, Response):
            await verdict(scope, receive, send)
        elif request.url.path.rstrip("/") == "/api/studies":
            owned = await run_in_threadpool(self.owned, verdict)
            # A HEAD has no body to filter: answer it with the filtered GET's headers only.
            head = request.method == "HEAD"
            get = {**scope, "method": "GET"} if head else scope
            await self.filtered(get, receive, send, owned, head=head)
        else:
            await self.app(scope, receive, send)

    async def check(self, request: Request) -> Response | str:
        """A response that refuses or redirects the request, or the caller's tenant."""
        if request.method not in ("GET", "HEAD"):
            return JSONResponse({"detail": "the dashboard is read-only"}, status_code=403)
        path = request.url.path
        browser = path == "/" or path.startswith("/dashboard")
        offered = request.query_params.get("token")
        if offered and browser:
            if await run_in_threadpool(self.tenant_of, offered) is None:
                return self.login("That token is not valid.", status_code=401)
            response = RedirectResponse("/dashboard", status_code=303)
            response.set_cookie(TOKEN_COOKIE, offered, httponly=True, samesite="strict")
            return response
        tenant = await run_in_threadpool(authenticate, self.db, presented_token(request))
        if tenant is None:
            if browser:
                return self.login("Enter an API token (from 'regtune token create NAME').")
            return JSONResponse({"detail": "missing or invalid token"}, status_code=401)
        match = STUDY_SCOPED.match(path)
        if match and int(match.group(1)) not in await run_in_threadpool(self.owned, tenant):
            return JSONResponse({"detail": "study not found"}, status_code=404)
        return tenant

    def tenant_of(self, token: str) -> str | None:
        with self.db.read() as session:
            return tenant_of(session, token)

    @staticmethod
    def login(message: str, status_code: int = 401) -> Response:
        return HTMLResponse(
            LOGIN_PAGE.format(message=html.escape(message)), status_code=status_code
        )

    def owned(self, tenant: str) -> set[int]:
        with self.db.read() as session:
            ids = session.scalars(select(StudyRecord.optuna_id).where(StudyRecord.tenant == tenant))
            return {i for i in ids if i is not None}

    async def filtered(
        self, scope: Scope, receive: Receive, send: Send, owned: set[int], *, head: bool = False
    ) -> None:
        """Run the study list and drop the studies of other tenants from its JSON."""
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        if start.get("status") == 200:
            data = json.loads(body)
            data["study_summaries"] = [
                s for s in data.get("study_summaries", []) if s.get("study_id") in owned
            ]
            body = json.dumps(data).encode()
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send(
            {"type": "http.response.start", "status": start.get("status", 500), "headers": headers}
        )
        await send({"type": "http.response.body", "body": b"" if head else body})
