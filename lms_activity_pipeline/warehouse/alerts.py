"""Alert incidents in ``lms_alert_incidents``: what was announced, so alerts survive restarts and are
sent once when two processes (the daemon and ``lms-activity monitor``) evaluate the same checks.

A message is *claimed* before it is sent (``notified_at`` / ``resolve_notified_at`` set with a
compare-and-set): of two processes only the one whose update changed the row sends it. A send that
fails gives the claim back (:meth:`AlertStore.unclaim`), so a later evaluation sends it again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lms_activity_pipeline import db
from lms_activity_pipeline.domain.alerts import HOUR, Alert, Incident, IncidentStatus, MessageKind
from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.warehouse.schema import lms_alert_incidents as table


class AlertStore:
    """Reads and writes ``lms_alert_incidents``; every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def incidents(self) -> dict[str, Incident]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(table)).mappings().all()
        return {
            r["key"]: Incident(
                key=r["key"],
                status=IncidentStatus(r["status"]),
                title=r["title"],
                opened_at=to_utc(r["opened_at"]),
                notified_at=to_utc(r["notified_at"]),
                resolved_at=to_utc(r["resolved_at"]),
                resolve_notified_at=to_utc(r["resolve_notified_at"]),
            )
            for r in rows
        }

    def open(self, alerts: Sequence[Alert], now: dt.datetime) -> None:
        """Open incidents for ``alerts`` (new keys inserted, resolved ones reopened); open ones are left alone."""
        now = to_utc(now)
        for alert in alerts:
            values = {"title": alert.title, "detail": alert.detail, "opened_at": now, "last_seen_at": now}
            try:
                with db.write_transaction(self.engine) as conn:
                    reopened = conn.execute(
                        table.update()
                        .where(table.c.key == alert.key, table.c.status == IncidentStatus.RESOLVED)
                        .values(
                            status=IncidentStatus.OPEN,
                            notified_at=None,
                            resolved_at=None,
                            resolve_notified_at=None,
                            last_error=None,
                            **values,
                        )
                    ).rowcount
                    exists = conn.execute(sa.select(table.c.key).where(table.c.key == alert.key)).first()
                    if not reopened and exists is None:
                        conn.execute(table.insert().values(key=alert.key, status=IncidentStatus.OPEN, **values))
            except sa.exc.IntegrityError:
                continue  # another process opened it at the same moment: one incident

    def seen(self, keys: Sequence[str], now: dt.datetime) -> None:
        if keys:
            with db.write_transaction(self.engine) as conn:
                conn.execute(table.update().where(table.c.key.in_(keys)).values(last_seen_at=to_utc(now)))

    def resolve(self, keys: Sequence[str], now: dt.datetime) -> None:
        if keys:
            with db.write_transaction(self.engine) as conn:
                conn.execute(
                    table.update()
                    .where(table.c.key.in_(keys), table.c.status == IncidentStatus.OPEN)
                    .values(status=IncidentStatus.RESOLVED, resolved_at=to_utc(now))
                )

    def claim(self, key: str, kind: MessageKind, now: dt.datetime) -> bool:
        """Take the right to send ``key``'s ``kind`` message (False: another process has it, or it was sent)."""
        column, status = _column(kind)
        with db.write_transaction(self.engine) as conn:
            changed = conn.execute(
                table.update()
                .where(table.c.key == key, table.c.status == status, column.is_(None))
                .values({column.name: to_utc(now), "last_error": None})
            ).rowcount
        return changed == 1

    def unclaim(self, key: str, kind: MessageKind, error: str) -> None:
        """The message could not be sent: a later evaluation tries again."""
        column, _ = _column(kind)
        with db.write_transaction(self.engine) as conn:
            conn.execute(table.update().where(table.c.key == key).values({column.name: None, "last_error": error}))

    def sent_since(self, since: dt.datetime) -> int:
        """Messages sent (claimed) after ``since``: openings and resolutions."""
        since = to_utc(since)
        stmt = sa.select(
            sa.func.count(table.c.notified_at).filter(table.c.notified_at >= since),
            sa.func.count(table.c.resolve_notified_at).filter(table.c.resolve_notified_at >= since),
        )
        with self.engine.connect() as conn:
            opened, resolved = conn.execute(stmt).one()
        return int(opened or 0) + int(resolved or 0)

    def sent_last_hour(self, now: dt.datetime) -> int:
        return self.sent_since(now - HOUR)


def _column(kind: MessageKind) -> tuple[sa.Column, IncidentStatus]:
    if kind is MessageKind.OPENED:
        return table.c.notified_at, IncidentStatus.OPEN
    return table.c.resolve_notified_at, IncidentStatus.RESOLVED
