"""Bearer-token authentication: ``Authorization: Bearer <token>`` (or the dashboard's cookie).

No token or an invalid one -> 401; a read token on a write endpoint -> 403. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request

from lms_activity_pipeline.warehouse.tokens import TokenInfo, verify_token

#: The dashboard's sign-in cookie (HttpOnly, SameSite=Strict).
COOKIE = "lms_token"


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def authenticate(request: Request, token: str | None) -> TokenInfo:
    if token is None:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    info = verify_token(request.app.state.service.engine, token)
    if info is None:
        raise HTTPException(401, "invalid or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return info


def require(scope: str) -> Callable[[Request], TokenInfo]:
    """A dependency: the caller's token, which must allow ``scope``."""

    def dependency(request: Request) -> TokenInfo:
        info = authenticate(request, bearer(request))
        if not info.allows(scope):
            raise HTTPException(403, f"token {info.name!r} has scope {info.scope!r}; this needs {scope!r}")
        return info

    return dependency


def csrf_token(token: str) -> str:
    """The CSRF token of a signed-in session: derived from its token, the same in every worker process."""
    return hmac.new(token.encode(), b"lms-activity dashboard csrf", hashlib.sha256).hexdigest()
