"""The LMS webhook inbox (``lms_webhook_inbox``): what ``POST /webhooks/lms`` recorded, and what a poll consumed.

The receiver only records (one row per ``webhook-id``: a repeat changes nothing); the next poll
(:mod:`lms_activity_pipeline.polling.tick`, the sensor and ``lms-activity monitor``) reads the rows
not consumed yet, hands the announced LMS rows to an ingest run however old they are, and marks them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lms_activity_pipeline import db
from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.warehouse.schema import lms_webhook_inbox as table

#: Webhook body ``type`` -> the LMS attempts table it announces (logical name).
SOURCES = {"attempt.changed": "attempts", "content_attempt.changed": "content_attempts"}
#: Announcements read per poll.
PAGE = 5000
#: Rows per ``INSERT`` when recording (4 parameters each, far below SQLite's limit).
RECORD_CHUNK = 500


@dataclass(frozen=True)
class Announcement:
    webhook_id: str
    source: str
    row_id: int


@dataclass(frozen=True)
class Received:
    """One verified webhook, to be recorded."""

    webhook_id: str
    source: str
    row_id: int
    received_at: dt.datetime


def record_many(engine: Engine, received: Sequence[Received]) -> set[str]:
    """Record announcements in one transaction; the webhook ids recorded now (a repeat of an earlier one,
    or of one before it in ``received``, records nothing)."""
    first: dict[str, Received] = {}
    for item in received:
        first.setdefault(item.webhook_id, item)
    rows = [
        {"webhook_id": r.webhook_id, "source": r.source, "row_id": r.row_id, "received_at": to_utc(r.received_at)}
        for r in first.values()
    ]
    recorded: set[str] = set()
    with db.write_transaction(engine) as conn:
        for i in range(0, len(rows), RECORD_CHUNK):
            stmt = (
                db.insert(conn, table)
                .values(rows[i : i + RECORD_CHUNK])
                .on_conflict_do_nothing(index_elements=["webhook_id"])
                .returning(table.c.webhook_id)
            )
            recorded.update(str(w) for (w,) in conn.execute(stmt))
    return recorded


def pending(engine: Engine, limit: int = PAGE) -> list[Announcement]:
    """Announcements no poll has consumed yet, oldest first."""
    stmt = (
        sa.select(table.c.webhook_id, table.c.source, table.c.row_id)
        .where(table.c.consumed_at.is_(None))
        .order_by(table.c.received_at, table.c.webhook_id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [Announcement(str(w), str(s), int(r)) for w, s, r in conn.execute(stmt)]


def has_pending(engine: Engine) -> bool:
    """Whether an announcement waits for a poll (an index lookup; ``monitor --daemon`` asks between polls)."""
    with engine.connect() as conn:
        return (
            conn.execute(sa.select(table.c.webhook_id).where(table.c.consumed_at.is_(None)).limit(1)).first()
            is not None
        )


def consume(engine: Engine, webhook_ids: list[str], run_key: str | None, now: dt.datetime) -> int:
    """Mark announcements handed to the run ``run_key`` (None: their rows were ingested already)."""
    done = 0
    with db.write_transaction(engine) as conn:
        for i in range(0, len(webhook_ids), 1000):
            done += conn.execute(
                table.update()
                .where(table.c.webhook_id.in_(webhook_ids[i : i + 1000]), table.c.consumed_at.is_(None))
                .values(consumed_at=to_utc(now), run_key=run_key)
            ).rowcount
    return done


def counts(engine: Engine) -> dict[str, int]:
    """Announcements received, and those waiting for a poll."""
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
        waiting = conn.execute(
            sa.select(sa.func.count()).select_from(table).where(table.c.consumed_at.is_(None))
        ).scalar_one()
    return {"received": int(total), "waiting": int(waiting)}
