"""API tokens: created once, stored as SHA-256, each bound to a tenant.

Tokens are 256-bit random strings, so a fast unsalted hash is enough: nothing about them
can be guessed from a dictionary, and lookups stay one indexed query.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.store.tables import ApiToken

TOKEN_PREFIX = "rt_"
# With no token in the database and a loopback bind, the API is open to this tenant.
OPEN_TENANT = "default"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str, tenant: str | None = None) -> str:
    """Store a new token's hash and return the token (the only time it is seen)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, tenant=tenant or name, token_hash=hash_token(token)))
    return token


def tenant_of(session: Session, token: str) -> str | None:
    """The tenant of ``token``, looked up by its SHA-256; the token itself is never compared.

    Why this is safe against timing attacks without ``hmac.compare_digest``: the database's
    index lookup and string comparison may take time that depends on how many leading
    characters match, but what they compare is the hash of the presented token, never the
    secret. An attacker who learns how much of a stored hash their guess's hash shares learns
    nothing about a token (finding an input whose SHA-256 has a chosen prefix does not bring
    them closer to the 256-bit random token), so the comparison is constant-time with respect
    to the secret.
    """
    return session.scalar(select(ApiToken.tenant).where(ApiToken.token_hash == hash_token(token)))


def any_tokens(session: Session) -> bool:
    return bool(session.scalar(select(func.count()).select_from(ApiToken)))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
