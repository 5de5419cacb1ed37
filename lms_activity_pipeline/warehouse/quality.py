"""Data-quality queries behind the asset checks: each selects the offending rows.

``window`` is ``(start, end)`` in event time, or ``None`` for the whole table.
Window-scoped queries use the ``timestamp`` index, so a check costs about as
much as reading its partition, however large the table grows.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES
from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.warehouse.features import in_window
from lms_activity_pipeline.warehouse.schema import ai_ready_events, lms_activity_events

EVENTS = lms_activity_events
AI = ai_ready_events
Window = tuple[dt.datetime, dt.datetime] | None
#: Clock skew between the LMS and the pipeline that is not yet "the future".
FUTURE_TOLERANCE = dt.timedelta(minutes=5)


def within(column: sa.ColumnElement, window: Window) -> sa.ColumnElement[bool]:
    """``column`` in the window (always true for the whole table)."""
    return sa.true() if window is None else in_window(column, *window)


def duplicate_event_keys(window: Window) -> sa.Select:
    """``event_key`` values stored more than once among the window's events."""
    return (
        sa.select(
            EVENTS.c.event_key,
            sa.func.count().label("rows"),
            sa.func.min(EVENTS.c.event_id).label("first_event_id"),
            sa.func.max(EVENTS.c.event_id).label("last_event_id"),
        )
        .where(within(EVENTS.c.timestamp, window))
        .group_by(EVENTS.c.event_key)
        .having(sa.func.count() > 1)
    )


def unknown_event_types(window: Window) -> sa.Select:
    """Window events whose type is not one of the seven."""
    return sa.select(EVENTS.c.event_id, EVENTS.c.event_key, EVENTS.c.event_type, EVENTS.c.timestamp).where(
        within(EVENTS.c.timestamp, window), EVENTS.c.event_type.not_in(ALL_EVENT_TYPES)
    )


def future_events(now: dt.datetime) -> sa.Select:
    """Events (anywhere in the table) later than ``now`` plus :data:`FUTURE_TOLERANCE`."""
    return sa.select(EVENTS.c.event_id, EVENTS.c.event_key, EVENTS.c.event_type, EVENTS.c.timestamp).where(
        EVENTS.c.timestamp > to_utc(now) + FUTURE_TOLERANCE
    )


def percentages_out_of_range(window: Window) -> sa.Select:
    """Window events whose metadata ``percentage`` or ``progress_percent`` is outside 0..100."""
    meta = EVENTS.c.activity_metadata
    pct, progress = meta["percentage"].as_float(), meta["progress_percent"].as_float()
    return sa.select(
        EVENTS.c.event_id,
        EVENTS.c.event_key,
        pct.label("percentage"),
        progress.label("progress_percent"),
    ).where(
        within(EVENTS.c.timestamp, window),
        sa.or_(pct < 0, pct > 100, progress < 0, progress > 100),
    )


def students_in_window(window: Window) -> sa.Select:
    """Each student with events in the window, and how many."""
    return (
        sa.select(EVENTS.c.student_id, sa.func.count().label("events"))
        .where(within(EVENTS.c.timestamp, window))
        .group_by(EVENTS.c.student_id)
    )


def ai_rows_not_one_per_event(window: Window) -> sa.CompoundSelect:
    """Window events without an ``ai_ready_events`` row, and feature rows without a window event."""
    missing = sa.select(
        EVENTS.c.event_id, EVENTS.c.event_key, sa.literal("event has no ai_ready_events row").label("problem")
    ).where(within(EVENTS.c.timestamp, window), ~sa.exists().where(AI.c.event_id == EVENTS.c.event_id))
    event_in_window = sa.exists().where(EVENTS.c.event_id == AI.c.event_id, within(EVENTS.c.timestamp, window))
    orphans = sa.select(
        AI.c.event_id, AI.c.event_key, sa.literal("ai_ready_events row has no event in the window").label("problem")
    ).where(within(AI.c.timestamp, window), ~event_in_window)
    return sa.union_all(missing, orphans)
