"""``zulip_user_cache``: mentor e-mail -> Zulip account, with an expiry, per Zulip site."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lms_activity_pipeline import db
from lms_activity_pipeline.domain.recipients import ZulipAccount, normalise_email
from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.warehouse.schema import zulip_user_cache as cache


class ZulipUserCache:
    """Cached answers of ``GET users/{email}`` on one Zulip ``site``."""

    def __init__(self, engine: Engine, site: str) -> None:
        self.engine = engine
        self.site = site

    def get(self, email: str, now: dt.datetime) -> ZulipAccount | None:
        """The cached account for ``email`` unless expired."""
        stmt = sa.select(cache).where(
            cache.c.site == self.site, cache.c.email == normalise_email(email), cache.c.expires_at > to_utc(now)
        )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).mappings().first()
        if row is None:
            return None
        return ZulipAccount(
            email=row["email"],
            found=bool(row["found"]),
            user_id=None if row["zulip_user_id"] is None else int(row["zulip_user_id"]),
            full_name=row["full_name"],
            is_active=bool(row["is_active"]),
            is_bot=bool(row["is_bot"]),
        )

    def put(self, account: ZulipAccount, now: dt.datetime, ttl: dt.timedelta) -> None:
        values = {
            "site": self.site,
            "email": normalise_email(account.email),
            "found": account.found,
            "zulip_user_id": account.user_id,
            "full_name": account.full_name,
            "is_active": account.is_active,
            "is_bot": account.is_bot,
            "fetched_at": to_utc(now),
            "expires_at": to_utc(now) + ttl,
        }
        with db.write_transaction(self.engine) as conn:
            insert = db.insert(conn, cache).values(**values)
            update = {k: v for k, v in values.items() if k not in ("site", "email")}
            conn.execute(insert.on_conflict_do_update(index_elements=["site", "email"], set_=update))

    def forget(self, email: str) -> None:
        with db.write_transaction(self.engine) as conn:
            conn.execute(cache.delete().where(cache.c.site == self.site, cache.c.email == normalise_email(email)))
