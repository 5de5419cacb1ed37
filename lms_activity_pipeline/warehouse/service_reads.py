"""The integration service's reads: event pages (keyset), notifications by status, the dashboard's figures.

Plain SQLAlchemy Core over the warehouse tables; rows come back as dicts with UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.warehouse.processing import API_COLUMNS
from lms_activity_pipeline.warehouse.schema import lms_activity_events as events
from lms_activity_pipeline.warehouse.schema import lms_event_log as log

#: The table students at risk are written to (once the risk feature exists).


def plain(row: Any) -> dict[str, Any]:
    """A row as a dict, datetimes as aware UTC."""
    return {k: (to_utc(v) if isinstance(v, dt.datetime) else v) for k, v in dict(row).items()}


def events_page(
    engine: Engine,
    *,
    event_types: Sequence[str] | None,
    student_id: int | None,
    course_id: int | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    after: int | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Up to ``limit`` events matching the filters, by ``event_id`` after ``after`` (keyset pagination)."""
    stmt = sa.select(*API_COLUMNS).order_by(events.c.event_id).limit(limit)
    if event_types:
        stmt = stmt.where(events.c.event_type.in_(event_types))
    if student_id is not None:
        stmt = stmt.where(events.c.student_id == student_id)
    if course_id is not None:
        stmt = stmt.where(events.c.course_id == course_id)
    if since is not None:
        stmt = stmt.where(events.c.timestamp >= to_utc(since))
    if until is not None:
        stmt = stmt.where(events.c.timestamp < to_utc(until))
    if after is not None:
        stmt = stmt.where(events.c.event_id > after)
    with engine.connect() as conn:
        return [plain(r) for r in conn.execute(stmt).mappings()]


NOTIFICATION_COLUMNS = [
    log.c.id,
    log.c.event_id,
    log.c.mentor_id,
    log.c.status,
    log.c.notification_sent,
    log.c.notification_message_id,
    log.c.error_message,
    log.c.attempts,
    log.c.delivery_uncertain,
    log.c.created_at,
    log.c.processed_at,
]


def notifications_page(engine: Engine, status: str | None, after: int | None, limit: int) -> list[dict[str, Any]]:
    """Outbox rows (of ``status``), by ``id`` after ``after``."""
    stmt = sa.select(*NOTIFICATION_COLUMNS).order_by(log.c.id).limit(limit)
    if status is not None:
        stmt = stmt.where(log.c.status == status)
    if after is not None:
        stmt = stmt.where(log.c.id > after)
    with engine.connect() as conn:
        return [plain(r) for r in conn.execute(stmt).mappings()]


def failures(engine: Engine, limit: int = 50) -> list[dict[str, Any]]:
    """The newest failed pairs (uncertain deliveries included) with their reasons."""
    stmt = (
        sa.select(*NOTIFICATION_COLUMNS, log.c.last_run_id)
        .where(log.c.status == "failed")
        .order_by(log.c.processed_at.desc().nulls_last(), log.c.id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [plain(r) for r in conn.execute(stmt).mappings()]


def per_mentor(engine: Engine, limit: int = 200) -> list[dict[str, Any]]:
    """Per mentor: pairs sent, held (pending), failed, and the last DM's time."""

    def count(status: str) -> sa.ColumnElement[int]:
        return sa.func.sum(sa.case((log.c.status == status, 1), else_=0))

    last_sent = sa.func.max(sa.case((log.c.status == "sent", log.c.processed_at), else_=None))
    stmt = (
        sa.select(
            log.c.mentor_id,
            sa.func.max(events.c.mentor_username).label("mentor_username"),
            count("sent").label("sent"),
            count("pending").label("held"),
            count("failed").label("failed"),
            last_sent.label("last_dm_at"),
        )
        .select_from(log.outerjoin(events, events.c.event_id == log.c.event_id))
        .group_by(log.c.mentor_id)
        .order_by(log.c.mentor_id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [plain(r) for r in conn.execute(stmt).mappings()]


def last_notify_run(engine: Engine) -> dict[str, Any] | None:
    """The run that last processed an outbox pair: ``{"run_id", "processed_at"}`` (None: nothing processed yet)."""
    stmt = (
        sa.select(log.c.last_run_id.label("run_id"), log.c.processed_at)
        .where(log.c.last_run_id.is_not(None), log.c.last_run_id != "", log.c.processed_at.is_not(None))
        .order_by(log.c.processed_at.desc(), log.c.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).mappings().first()
    return None if row is None else plain(row)


#: The outbox statuses of the dashboard's trend (by ``processed_at``).
TREND_STATUSES = ("sent", "failed", "skipped")


def outbox_trend(engine: Engine, today: dt.date, days: int = 14) -> list[dict[str, Any]]:
    """Pairs ``sent``/``failed``/``skipped`` per UTC day of ``processed_at``, the ``days`` days up to ``today``,
    oldest first; every day is present (zeros included)."""
    first = today - dt.timedelta(days=days - 1)
    start = dt.datetime.combine(first, dt.time(), tzinfo=dt.UTC)
    day_of = sa.func.date(log.c.processed_at) if engine.dialect.name == "sqlite" else None
    if day_of is None:  # PostgreSQL: the UTC day of a timestamptz
        day_of = sa.func.date(sa.func.timezone("UTC", log.c.processed_at))
    stmt = (
        sa.select(day_of.label("day"), log.c.status, sa.func.count().label("n"))
        .where(log.c.processed_at >= start, log.c.status.in_(TREND_STATUSES))
        .group_by(day_of, log.c.status)
    )
    table = {first + dt.timedelta(days=i): dict.fromkeys(TREND_STATUSES, 0) for i in range(days)}
    with engine.connect() as conn:
        for day, status, n in conn.execute(stmt):
            key = day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day)[:10])
            if key in table:
                table[key][status] = int(n)
    return [{"day": day, **counts} for day, counts in table.items()]
