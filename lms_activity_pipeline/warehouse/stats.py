"""What ``lms-activity monitor --stats`` reads from the warehouse: events per type, newest event, outbox statuses."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES
from lms_activity_pipeline.domain.outbox import STATUSES
from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.warehouse.schema import lms_activity_events as events
from lms_activity_pipeline.warehouse.schema import lms_event_log as log


@dataclass(frozen=True)
class EventStats:
    """Counts per event type (all and the last 24 h), the newest event's time, pairs per outbox status."""

    total: dict[str, int]
    last_24h: dict[str, int]
    newest_event: dt.datetime | None
    notifications: dict[str, int]


def event_stats(engine: Engine, now: dt.datetime) -> EventStats:
    by_type = sa.select(events.c.event_type, sa.func.count()).group_by(events.c.event_type)
    with engine.connect() as conn:
        totals = {str(t): int(n) for t, n in conn.execute(by_type)}
        recent = {
            str(t): int(n)
            for t, n in conn.execute(by_type.where(events.c.timestamp >= to_utc(now) - dt.timedelta(hours=24)))
        }
        newest = conn.execute(sa.select(sa.func.max(events.c.timestamp))).scalar()
        statuses = {
            str(s): int(n) for s, n in conn.execute(sa.select(log.c.status, sa.func.count()).group_by(log.c.status))
        }
    return EventStats(
        total={t: totals.get(t, 0) for t in ALL_EVENT_TYPES},
        last_24h={t: recent.get(t, 0) for t in ALL_EVENT_TYPES},
        newest_event=to_utc(newest),
        notifications={s.value: statuses.get(s.value, 0) for s in STATUSES},
    )
