"""Warehouse side of the feature tables: set-based reads of a window and its history, and writes.

The window is ``[start, end)`` in event time. History is read only for the
students active in the window: their events of the
:data:`~lms_activity_pipeline.domain.features.LOOKBACK` before it in detail,
and two aggregates of everything older (latest event time, failures per
exam), each an index lookup on ``(student_id, timestamp)``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

import pandas as pd
import sqlalchemy as sa

from lms_activity_pipeline import db
from lms_activity_pipeline.domain.event_types import EventType
from lms_activity_pipeline.domain.features import HISTORY_COLUMNS, LOOKBACK, TIMELINE_COLUMNS, History
from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.warehouse import load
from lms_activity_pipeline.warehouse.processing import lock_processed_flags, sync_processed_flags
from lms_activity_pipeline.warehouse.schema import ai_ready_events, lms_activity_events, student_daily_activity

EVENTS = lms_activity_events
AI = ai_ready_events
#: The open end of "everything after the window".
FAR_FUTURE = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
#: Students per ``IN`` list when features are recomputed for a set of students.
STUDENT_CHUNK = 2000


def in_window(column: sa.ColumnElement, start: dt.datetime, end: dt.datetime) -> sa.ColumnElement[bool]:
    return sa.and_(column >= to_utc(start), column < to_utc(end))


def window_events(start: dt.datetime, end: dt.datetime, students: Collection[int] | None = None) -> sa.Select:
    """The window's events (of ``students`` only, if given) with the ``activity_metadata`` fields the
    features use, extracted in SQL."""
    meta = EVENTS.c.activity_metadata
    return sa.select(
        EVENTS.c.event_id,
        EVENTS.c.event_key,
        EVENTS.c.student_id,
        EVENTS.c.student_username,
        EVENTS.c.event_type,
        EVENTS.c.timestamp,
        EVENTS.c.course_id,
        EVENTS.c.activity_id,
        EVENTS.c.processed_for_ai,
        meta["percentage"].as_float().label("percentage"),
        meta["attempt_number"].as_float().label("attempt_number"),  # as numbers: a JSON 2.0 must not fail a CAST
        meta["progress_percent"].as_float().label("progress_percent"),
        meta["time_spent_seconds"].as_float().label("time_spent_seconds"),
    ).where(in_window(EVENTS.c.timestamp, start, end), *_only(students))


def _only(students: Collection[int] | None) -> list[sa.ColumnElement[bool]]:
    return [] if students is None else [EVENTS.c.student_id.in_(sorted(students))]


def _window_students(start: dt.datetime, end: dt.datetime, students: Collection[int] | None = None) -> sa.Select:
    return sa.select(EVENTS.c.student_id).where(in_window(EVENTS.c.timestamp, start, end), *_only(students)).distinct()


def recent_history(start: dt.datetime, end: dt.datetime, students: Collection[int] | None = None) -> sa.Select:
    """Events of the window's students in the look-back before ``start``."""
    return sa.select(*[EVENTS.c[c] for c in HISTORY_COLUMNS]).where(
        in_window(EVENTS.c.timestamp, start - LOOKBACK, start),
        EVENTS.c.student_id.in_(_window_students(start, end, students)),
    )


def last_event_before(
    start: dt.datetime, end: dt.datetime, cutoff: dt.datetime, students_in: Collection[int] | None = None
) -> sa.Select:
    """Per window student, their latest event time before ``cutoff`` (NULL if none)."""
    students = _window_students(start, end, students_in).subquery("students")
    older = EVENTS.alias("older")
    latest = (
        sa.select(sa.func.max(older.c.timestamp))
        .where(older.c.student_id == students.c.student_id, older.c.timestamp < to_utc(cutoff))
        .scalar_subquery()
    )
    return sa.select(students.c.student_id, latest.label("last_event_at"))


def failures_before(
    start: dt.datetime, end: dt.datetime, cutoff: dt.datetime, students: Collection[int] | None = None
) -> sa.Select:
    """Per window student and exam, their ``exam_failed`` events before ``cutoff``."""
    return (
        sa.select(EVENTS.c.student_id, EVENTS.c.activity_id, sa.func.count().label("failures"))
        .where(
            EVENTS.c.event_type == EventType.EXAM_FAILED.value,
            EVENTS.c.timestamp < to_utc(cutoff),
            EVENTS.c.student_id.in_(_window_students(start, end, students)),
        )
        .group_by(EVENTS.c.student_id, EVENTS.c.activity_id)
    )


def read_feature_inputs(
    conn: sa.Connection, start: dt.datetime, end: dt.datetime, students: Collection[int] | None = None
) -> tuple[pd.DataFrame, History]:
    """The window's events (of ``students`` only, if given) and the history their features need."""
    cutoff = start - LOOKBACK
    events = db.read_typed(conn, window_events(start, end, students))
    if events.empty:
        return events, History.empty()
    last = db.read_typed(conn, last_event_before(start, end, cutoff, students))
    history = History(
        recent=db.read_typed(conn, recent_history(start, end, students)),
        last_event_at=last.dropna(subset=["last_event_at"]).reset_index(drop=True),
        failures=db.read_typed(conn, failures_before(start, end, cutoff, students)),
    )
    return events, history


def has_rows_after(conn: sa.Connection, end: dt.datetime) -> bool:
    """Does ``ai_ready_events`` hold rows at or after ``end`` (whose features a change before may alter)?"""
    return conn.execute(sa.select(AI.c.event_id).where(AI.c.timestamp >= to_utc(end)).limit(1)).first() is not None


def stored_timeline(conn: sa.Connection, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """``ai_ready_events`` of the window as stored: what later rows' features were computed from."""
    cols = [AI.c[c] for c in TIMELINE_COLUMNS]
    return db.read_typed(conn, sa.select(*cols).where(in_window(AI.c.timestamp, start, end)))


def write_ai_ready_events(
    conn: sa.Connection, features: pd.DataFrame, start: dt.datetime, end: dt.datetime, *, whole_window: bool = True
) -> load.UpsertResult:
    """Make ``ai_ready_events`` of the window equal ``features``, ``processed_for_ai`` synced.

    ``whole_window=False`` upserts ``features`` without deleting the window's
    other rows (a recomputation for some students only). Holds the
    processed-flag lock (PostgreSQL) so a concurrent ``mark_processed`` either
    lands before the sync or sees the rows written here.
    """
    lock_processed_flags(conn, exclusive=True)
    prune = in_window(ai_ready_events.c.timestamp, start, end) if whole_window else None
    if features.empty and prune is None:
        return load.UpsertResult(0, 0, 0)
    result = load.upsert(conn, ai_ready_events, features, "event_id", touch="updated_at", prune=prune)
    sync_processed_flags(conn, to_utc(start), to_utc(end))
    return result


def write_daily_activity(
    conn: sa.Connection, daily: pd.DataFrame, first_day: dt.date, end_day: dt.date
) -> load.UpsertResult:
    """Make ``student_daily_activity`` for the days ``[first_day, end_day)`` equal ``daily``."""
    table = student_daily_activity
    return load.upsert(
        conn,
        table,
        daily,
        ["student_id", "day"],
        touch="updated_at",
        prune=sa.and_(table.c.day >= first_day, table.c.day < end_day),
    )
