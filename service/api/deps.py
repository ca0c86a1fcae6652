"""Dependencies injected into the routers: database, Optuna storage, settings, tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from optuna.storages import RDBStorage

from service.auth import OPEN_TENANT, any_tokens, tenant_of
from service.db import Database
from service.settings import Settings

TOKEN_COOKIE = "regtune_token"


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_storage(request: Request) -> RDBStorage:
    return request.app.state.storage


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def presented_token(request: Request) -> str | None:
    """A bearer token from the Authorization header, or (for browsers) the dashboard cookie."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        return token.strip()
    return request.cookies.get(TOKEN_COOKIE)


def authenticate(db: Database, token: str | None) -> str | None:
    """The caller's tenant; the open tenant while no token exists; None if refused."""
    with db.read() as session:
        if not any_tokens(session):
            return OPEN_TENANT
        return tenant_of(session, token) if token else None


def current_tenant(request: Request, db: Annotated[Database, Depends(get_db)]) -> str:
    tenant = authenticate(db, presented_token(request))
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
Tenant = Annotated[str, Depends(current_tenant)]
