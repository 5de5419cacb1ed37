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
        sa.select(*NOTIFICATION_COLUMNS)
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
