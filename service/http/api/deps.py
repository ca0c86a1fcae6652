"""Dependencies injected into the routers: database, Optuna storage, settings, tenant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status
from optuna.storages import RDBStorage
from starlette.concurrency import run_in_threadpool

from service.http.cache import TTLCache
from service.settings import Settings
from service.store.auth import OPEN_TENANT, any_tokens, hash_token, tenant_of
from service.store.db import Database

TOKEN_COOKIE = "regtune_token"


# Dependencies that only read app state are ``async def``: FastAPI runs a plain ``def``
# dependency in the thread pool, a round trip per dependency per request.
async def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_storage(request: Request) -> RDBStorage:
    return request.app.state.storage


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def presented_token(request: Request) -> str | None:
    """A bearer token from the Authorization header, or (for browsers) the dashboard cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.cookies.get(TOKEN_COOKIE)


class Authenticator:
    """Token → tenant, with the lookups pollers repeat kept for ``auth_cache_s``.

    Once a token exists the API is closed for good (tokens are never deleted through the
    service), so "are there tokens?" is asked only until the answer is yes. It is asked on
    every request until then, not cached: the first token (made by ``regtune token create``
    in another process) must close the API at once, not one cache period later. Keys are token
    hashes: the cache holds no secret.
    """

    def __init__(self, db: Database, ttl_s: float) -> None:
        self.db, self.cache = db, TTLCache[str | None](ttl_s)
        self.closed = False

    def __call__(self, token: str | None) -> str | None:
        """The caller's tenant; the open tenant while no token exists; None if refused."""
        if not self.closed:
            self.closed = not self.without_tokens()
            if not self.closed:
                return OPEN_TENANT
        if not token:
            return None
        return self.cache.get(hash_token(token), lambda: self.lookup(token))

    async def resolve(self, token: str | None) -> str | None:
        """``self(token)`` from the event loop: a cached answer without a thread-pool trip."""
        if self.closed and token:
            return await self.cache.aget(hash_token(token), lambda: self.lookup(token))
        return await run_in_threadpool(self, token)

    def without_tokens(self) -> bool:
        with self.db.read() as session:
            return not any_tokens(session)

    def lookup(self, token: str) -> str | None:
        with self.db.read() as session:
            return tenant_of(session, token)


def authenticate(db: Database, token: str | None) -> str | None:
    """The caller's tenant, uncached (for callers without an app)."""
    return Authenticator(db, ttl_s=0)(token)


async def current_tenant(request: Request) -> str:
    tenant = await request.app.state.authenticator.resolve(presented_token(request))
    if tenant is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid token: send 'Authorization: Bearer <token>' "
            "(create one with 'regtune token create NAME')",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return tenant


DB = Annotated[Database, Depends(get_db)]
Storage = Annotated[RDBStorage, Depends(get_storage)]
AppSettings = Annotated[Settings, Depends(get_settings)]


async def get_status_cache(request: Request) -> TTLCache[Any]:
    return request.app.state.status_cache


StatusCache = Annotated[TTLCache[Any], Depends(get_status_cache)]
Tenant = Annotated[str, Depends(current_tenant)]
