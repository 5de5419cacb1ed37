"""The ``processed_for_ai`` workflow in SQL: reading the queue, claiming, marking, mirroring.

``lms_activity_events.processed_for_ai`` is the truth; ``ai_ready_events``
mirrors it. The flag only ever goes from false to true. Writers of the mirror
take an advisory lock on PostgreSQL (:func:`lock_processed_flags`): markers
share it, the feature asset holds it exclusively while it rewrites a window,
so a mark is never lost between the asset's read and its write.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

import sqlalchemy as sa

from lms_activity_pipeline import db
from lms_activity_pipeline.warehouse.schema import ai_ready_events, lms_activity_events

EVENTS = lms_activity_events
AI = ai_ready_events
FLAG_LOCK = "lms_activity_pipeline.processed_for_ai"
#: Ids per statement (well under SQLite's bound-parameter limit).
CHUNK = 5000
#: Columns of the API's event frames: the table without the claim bookkeeping.
API_COLUMNS = [c for c in EVENTS.columns if not c.name.startswith("ai_claim")]


def lock_processed_flags(conn: sa.Connection, *, exclusive: bool) -> None:
    """Take the processed-flag advisory lock until the transaction ends (PostgreSQL; no-op on SQLite).

    SQLite needs none: it has one writer at a time.
    """
    if db.is_postgres(conn):
        fn = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        conn.execute(sa.text(f"SELECT {fn}(hashtext(:key))"), {"key": FLAG_LOCK})


def sync_processed_flags(conn: sa.Connection, start: dt.datetime, end: dt.datetime) -> int:
    """Copy ``processed_for_ai`` from the events to ``ai_ready_events`` rows of the window; rows changed."""
    flag = sa.select(EVENTS.c.processed_for_ai).where(EVENTS.c.event_id == AI.c.event_id).scalar_subquery()
    truth = sa.func.coalesce(flag, AI.c.processed_for_ai)
    stmt = (
        AI.update()
        .where(AI.c.timestamp >= start, AI.c.timestamp < end, AI.c.processed_for_ai.is_distinct_from(truth))
        .values(processed_for_ai=truth)
    )
    return conn.execute(stmt).rowcount


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i : i + CHUNK]


def mark_processed(conn: sa.Connection, event_ids: Sequence[int]) -> int:
    """Set ``processed_for_ai`` on the events and their feature rows; returns events newly marked."""
    lock_processed_flags(conn, exclusive=False)
    marked = 0
    for chunk in _chunks(event_ids):
        marked += conn.execute(
            EVENTS.update()
            .where(EVENTS.c.event_id.in_(chunk), EVENTS.c.processed_for_ai.is_(False))
            .values(processed_for_ai=True)
        ).rowcount
        conn.execute(
            AI.update().where(AI.c.event_id.in_(chunk), AI.c.processed_for_ai.is_(False)).values(processed_for_ai=True)
        )
    return marked


def unprocessed(event_types: Sequence[str], limit: int | None) -> sa.Select:
    """Unprocessed events of ``event_types``, oldest first (claimed or not)."""
    stmt = (
        sa.select(*API_COLUMNS)
        .where(EVENTS.c.processed_for_ai.is_(False), EVENTS.c.event_type.in_(event_types))
        .order_by(EVENTS.c.timestamp, EVENTS.c.event_id)
    )
    return stmt if limit is None else stmt.limit(limit)


def claim(
    conn: sa.Connection,
    limit: int,
    event_types: Sequence[str],
    worker: str,
    now: dt.datetime,
    lease: dt.timedelta,
) -> list[int]:
    """Claim up to ``limit`` unprocessed, unclaimed (or lease-expired) events for ``worker``, oldest first.

    Two statements in the caller's transaction: ``SELECT ... FOR UPDATE SKIP
    LOCKED`` (PostgreSQL; rows another worker is claiming are skipped, rows it
    has claimed fail the lease test) and the update that records the lease.
    """
    claimable = (
        sa.select(EVENTS.c.event_id)
        .where(
            EVENTS.c.processed_for_ai.is_(False),
            EVENTS.c.event_type.in_(event_types),
            sa.or_(EVENTS.c.ai_claim_expires_at.is_(None), EVENTS.c.ai_claim_expires_at <= now),
        )
        .order_by(EVENTS.c.timestamp, EVENTS.c.event_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(conn.execute(claimable).scalars())
    for chunk in _chunks(ids):
        conn.execute(
            EVENTS.update()
            .where(EVENTS.c.event_id.in_(chunk))
            .values(ai_claimed_by=worker, ai_claim_expires_at=now + lease)
        )
    return ids


def claimed_by(worker: str) -> sa.Select:
    """Unprocessed events claimed by ``worker`` (a per-claim token), with their lease, oldest first."""
    return (
        sa.select(*API_COLUMNS, EVENTS.c.ai_claimed_by, EVENTS.c.ai_claim_expires_at)
        .where(EVENTS.c.ai_claimed_by == worker, EVENTS.c.processed_for_ai.is_(False))
        .order_by(EVENTS.c.timestamp, EVENTS.c.event_id)
    )


def student_history(student_id: int, since: dt.datetime, until: dt.datetime) -> sa.Select:
    """A student's events in ``[since, until]``, newest first."""
    return (
        sa.select(*API_COLUMNS)
        .where(EVENTS.c.student_id == student_id, EVENTS.c.timestamp >= since, EVENTS.c.timestamp <= until)
        .order_by(EVENTS.c.timestamp.desc(), EVENTS.c.event_id.desc())
    )
