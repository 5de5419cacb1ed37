"""Bearer tokens of the integration service (``lms_service_tokens``): created, listed, revoked, verified.

A token is ``lmsat_<token_id>_<secret>``. Only ``token_id`` (to find the row), a random salt and
SHA-256(salt + secret) are stored; verification recomputes the hash and compares it with
:func:`hmac.compare_digest`. The token itself is returned once by :func:`create_token` and never logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lms_activity_pipeline import db
from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.errors import ConfigError
from lms_activity_pipeline.warehouse.schema import lms_service_tokens as table

PREFIX = "lmsat"
SCOPES = ("read", "write")


@dataclass(frozen=True)
class TokenInfo:
    """A stored token, without its secret."""

    name: str
    scope: str
    created_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def allows(self, scope: str) -> bool:
        """``write`` tokens may read too."""
        return self.scope == "write" or scope == "read"


def _hash(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def create_token(engine: Engine, name: str, scope: str, now: dt.datetime | None = None) -> str:
    """Store a new token called ``name`` and return it (the only time it is seen)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ConfigError("--name must be 1 to 100 characters")
    if scope not in SCOPES:
        raise ConfigError(f"--scope {scope!r} is not a scope (use read or write)")
    token_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
    values = {
        "name": name,
        "token_id": token_id,
        "scope": scope,
        "salt": salt,
        "secret_hash": _hash(salt, secret),
        "created_at": to_utc(now or dt.datetime.now(dt.UTC)),
        "revoked_at": None,
    }
    with db.write_transaction(engine) as conn:
        row = conn.execute(sa.select(table.c.revoked_at).where(table.c.name == name)).first()
        if row is not None and row.revoked_at is None:
            raise ConfigError(f"a token named {name!r} exists already (revoke it first: lms-activity token revoke)")
        if row is not None:
            conn.execute(table.delete().where(table.c.name == name))
        conn.execute(table.insert().values(**values))
    return f"{PREFIX}_{token_id}_{secret}"


def list_tokens(engine: Engine) -> list[TokenInfo]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).order_by(table.c.name)).mappings().all()
    return [TokenInfo(r["name"], r["scope"], to_utc(r["created_at"]), to_utc(r["revoked_at"])) for r in rows]


def revoke_token(engine: Engine, name: str, now: dt.datetime | None = None) -> bool:
    """Revoke the token ``name``; False when there is no valid token of that name."""
    with db.write_transaction(engine) as conn:
        return (
            conn.execute(
                table.update()
                .where(table.c.name == name, table.c.revoked_at.is_(None))
                .values(revoked_at=to_utc(now or dt.datetime.now(dt.UTC)))
            ).rowcount
            == 1
        )


def verify_token(engine: Engine, token: str) -> TokenInfo | None:
    """The valid token ``token`` is, or None (malformed, unknown, wrong secret or revoked)."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    with engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.token_id == parts[1])).mappings().first()
    if row is None:
        hmac.compare_digest(_hash("0" * 32, parts[2]), "0" * 64)  # same work whether the id exists or not
        return None
    if not hmac.compare_digest(_hash(row["salt"], parts[2]), row["secret_hash"]) or row["revoked_at"] is not None:
        return None
    return TokenInfo(row["name"], row["scope"], to_utc(row["created_at"]), None)
