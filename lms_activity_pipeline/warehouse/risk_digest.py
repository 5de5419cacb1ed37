"""The at-risk digest's outbox (``risk_digest_log``) and feedback (``risk_feedback``): reads and writes.

A row per (mentor, student, course, day) told, under a primary key: enqueueing the same day again inserts
nothing, so whatever is re-run a flag is told to a mentor once per day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa

from lms_activity_pipeline import db
from lms_activity_pipeline.warehouse.schema import risk_digest_log, risk_feedback, student_risk

LOG = risk_digest_log
RISK = student_risk
#: Statuses that mean "told" (a dry run renders and logs, and counts as told so it does not pile up).
TOLD = ("sent", "dry_run")
FLAGGED = ("high", "medium")
GROUP_KEYS = ["mentor_id", "course_id", "as_of"]
#: A failed digest is retried by later notify runs this many times in all.
MAX_ATTEMPTS = 5


def flagged_on(conn: sa.Connection, as_of: dt.date) -> pd.DataFrame:
    """``high``/``medium`` rows of day ``as_of`` whose student has a mentor."""
    stmt = sa.select(RISK.c.mentor_id, RISK.c.student_id, RISK.c.course_id, RISK.c.risk_level).where(
        RISK.c.as_of == as_of, RISK.c.risk_level.in_(FLAGGED), RISK.c.mentor_id.is_not(None)
    )
    return db.read_typed(conn, stmt)


def previously_told(conn: sa.Connection, before: dt.date, since: dt.date) -> pd.DataFrame:
    """Per (mentor, course), the students flagged in its latest digest of a day in ``[since, before)``."""
    stmt = sa.select(LOG.c.mentor_id, LOG.c.student_id, LOG.c.course_id, LOG.c.as_of).where(
        LOG.c.as_of < before, LOG.c.as_of >= since, LOG.c.status.in_(TOLD), LOG.c.risk_level.in_(FLAGGED)
    )
    told = db.read_typed(conn, stmt)
    if told.empty:
        return told
    latest = told.groupby(["mentor_id", "course_id"])["as_of"].transform("max")
    return told[told["as_of"] == latest].reset_index(drop=True)


def last_sent(conn: sa.Connection, mentor_ids: Collection[int]) -> dict[tuple[int, int], dt.datetime]:
    """When each (mentor, course)'s last at-risk digest went out (pairs never told are absent)."""
    if not mentor_ids:
        return {}
    stmt = (
        sa.select(LOG.c.mentor_id, LOG.c.course_id, sa.func.max(LOG.c.sent_at).label("sent_at"))
        .where(LOG.c.status.in_(TOLD), LOG.c.mentor_id.in_(sorted(mentor_ids)))
        .group_by(LOG.c.mentor_id, LOG.c.course_id)
    )
    frame = db.read_typed(conn, stmt)
    return {
        (int(m), int(c)): t.to_pydatetime()
        for m, c, t in zip(frame["mentor_id"], frame["course_id"], frame["sent_at"], strict=True)
    }


def logged_keys(conn: sa.Connection, as_of: dt.date) -> set[tuple[int, int, int]]:
    """(mentor, student, course) of every row of day ``as_of`` in the log, whatever its status."""
    stmt = sa.select(LOG.c.mentor_id, LOG.c.student_id, LOG.c.course_id).where(LOG.c.as_of == as_of)
    return {(int(m), int(s), int(c)) for m, s, c in conn.execute(stmt)}


def enqueue(conn: sa.Connection, rows: pd.DataFrame, now: dt.datetime) -> int:
    """Insert ``rows`` (mentor_id, student_id, course_id, as_of, risk_level, is_new) as pending; rows already
    there (told or not) are left alone. Returns how many were new."""
    if rows.empty:
        return 0
    records = [
        {
            "mentor_id": int(r["mentor_id"]),
            "student_id": int(r["student_id"]),
            "course_id": int(r["course_id"]),
            "as_of": r["as_of"],
            "risk_level": str(r["risk_level"]),
            "is_new": bool(r["is_new"]),
            "status": "pending",
            "attempts": 0,
            "enqueued_at": now,
        }
        for r in rows.to_dict("records")
    ]
    result = conn.execute(db.insert(conn, LOG).on_conflict_do_nothing(), records)
    return max(result.rowcount or 0, 0)


def open_rows(conn: sa.Connection, stale_before: dt.datetime) -> pd.DataFrame:
    """Rows not told yet: pending, failed with attempts left, or ``sending`` since before ``stale_before``
    (a run stopped mid-send, or the outcome was uncertain: looked up on Zulip before any resend). Rows
    another run is sending right now are not open."""
    stmt = (
        sa.select(LOG)
        .where(
            sa.or_(
                LOG.c.status == "pending",
                sa.and_(LOG.c.status == "failed", LOG.c.attempts < MAX_ATTEMPTS),
                sa.and_(LOG.c.status == "sending", LOG.c.attempted_at < stale_before),
            )
        )
        .order_by(LOG.c.mentor_id, LOG.c.course_id, LOG.c.as_of, LOG.c.student_id)
    )
    return db.read_typed(conn, stmt)


def claim_group(
    conn: sa.Connection,
    mentor_id: int,
    course_id: int,
    as_of: dt.date,
    students: Sequence[int],
    stale_before: dt.datetime,
    **values: Any,
) -> int:
    """Mark the group's open rows ``sending`` with ``values``; returns how many this run got (fewer than
    ``students``: another run has some of them)."""
    open_ = sa.or_(
        LOG.c.status == "pending",
        sa.and_(LOG.c.status == "failed", LOG.c.attempts < MAX_ATTEMPTS),
        sa.and_(LOG.c.status == "sending", LOG.c.attempted_at < stale_before),
    )
    stmt = (
        LOG.update()
        .where(_group(mentor_id, course_id, as_of), LOG.c.student_id.in_(sorted(students)), open_)
        .values(status="sending", attempts=LOG.c.attempts + 1, **values)
    )
    return max(conn.execute(stmt).rowcount or 0, 0)


def risk_rows_of(conn: sa.Connection, as_of: dt.date, course_id: int, students: Sequence[int]) -> pd.DataFrame:
    """``student_risk`` rows of ``students`` in a course and day (names and reasons for the digest)."""
    stmt = sa.select(RISK.c.student_id, RISK.c.student_username, RISK.c.course_title, RISK.c.reasons).where(
        RISK.c.as_of == as_of, RISK.c.course_id == course_id, RISK.c.student_id.in_(sorted(students))
    )
    return db.read_typed(conn, stmt)


def on_track_of(conn: sa.Connection, as_of: dt.date, course_id: int, mentor_id: int) -> pd.DataFrame:
    """The mentor's students on track in a course and day, longest streak first."""
    stmt = (
        sa.select(RISK.c.student_id, RISK.c.student_username, RISK.c.streak_days, RISK.c.course_title)
        .where(RISK.c.as_of == as_of, RISK.c.course_id == course_id, RISK.c.mentor_id == mentor_id, RISK.c.on_track)
        .order_by(RISK.c.streak_days.desc(), RISK.c.student_id)
    )
    return db.read_typed(conn, stmt)


def _group(mentor_id: int, course_id: int, as_of: dt.date) -> sa.ColumnElement[bool]:
    return sa.and_(LOG.c.mentor_id == mentor_id, LOG.c.course_id == course_id, LOG.c.as_of == as_of)


def update_group(
    conn: sa.Connection, mentor_id: int, course_id: int, as_of: dt.date, students: Sequence[int], **values: Any
) -> int:
    """Set ``values`` on the group's rows of ``students`` that are not told yet."""
    stmt = (
        LOG.update()
        .where(_group(mentor_id, course_id, as_of), LOG.c.student_id.in_(sorted(students)), ~LOG.c.status.in_(TOLD))
        .values(**values)
    )
    return max(conn.execute(stmt).rowcount or 0, 0)


def sent_messages(conn: sa.Connection, since: dt.datetime) -> pd.DataFrame:
    """Digest messages sent since ``since``: message, mentor, their Zulip id, and the students it flagged."""
    stmt = sa.select(
        LOG.c.message_id, LOG.c.mentor_id, LOG.c.zulip_user_id, LOG.c.student_id, LOG.c.course_id, LOG.c.as_of
    ).where(
        LOG.c.status == "sent",
        LOG.c.message_id.is_not(None),
        LOG.c.sent_at >= since,
        LOG.c.risk_level.in_(FLAGGED),
    )
    return db.read_typed(conn, stmt)


def write_feedback(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Insert feedback rows; one already there (same message, mentor, student, label) is kept as it was."""
    if not rows:
        return 0
    result = conn.execute(db.insert(conn, risk_feedback).on_conflict_do_nothing(), list(rows))
    return max(result.rowcount or 0, 0)
