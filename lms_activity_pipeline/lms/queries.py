"""SQLAlchemy Core queries against the LMS, built from a source profile.

Timestamps compare natively on PostgreSQL (so the ``updated_at`` index is
used); on SQLite they are ISO-8601 text in any offset, compared through
``julianday``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.lms.schema import SourceProfile

EXAM_ATTEMPT_FIELDS = [
    "id",
    "user_id",
    "exam_id",
    "status",
    "started_at",
    "submitted_at",
    "graded_at",
    "score",
    "updated_at",
]
CONTENT_ATTEMPT_FIELDS = [
    "id",
    "user_id",
    "content_id",
    "status",
    "progress_percent",
    "time_spent_seconds",
    "started_at",
    "completed_at",
    "updated_at",
]
DIMENSION_FIELDS = {
    "users": ["id", "username", "email", "full_name", "role", "is_active"],
    "courses": ["id", "title"],
    "exams": ["id", "course_id", "title", "max_score", "pass_score"],
    "contents": ["id", "course_id", "title", "content_type", "duration_seconds"],
    "mentor_assignments": ["id", "student_id", "mentor_id", "assigned_at", "ended_at"],
}
#: Above this many students a history query reads the whole table once instead of an IN list.
HISTORY_IN_LIST_LIMIT = 2000
#: The times pandas can hold (64-bit nanoseconds), whole days inside. A value outside (PostgreSQL's
#: ``infinity``/``-infinity``, BC dates, year 9999) cannot be placed in any window: cleaning rejects it.
READABLE_FROM = dt.datetime(1677, 9, 22, tzinfo=dt.UTC)
READABLE_UNTIL = dt.datetime(2262, 4, 11, tzinfo=dt.UTC)


@dataclass(frozen=True)
class ExtractWindow:
    """Which LMS rows a run reads.

    ``start``/``end``: rows whose lifetime (``started_at`` .. ``updated_at``)
    overlaps ``[start, end)``; every event time of a row lies in that span.
    ``changed_since``/``changed_until``: only rows with ``updated_at`` in
    ``(changed_since, changed_until]`` (incremental runs). Any bound may be None.
    """

    start: dt.datetime | None = None
    end: dt.datetime | None = None
    changed_since: dt.datetime | None = None
    changed_until: dt.datetime | None = None

    def describe(self) -> str:
        """``2024-05-01 .. 2024-05-08`` (the days of the window, its end exclusive)."""
        day = lambda value: "-" if value is None else value.date().isoformat()  # noqa: E731
        return f"{day(self.start)} .. {day(self.end)}"

    def chunks(self, days: int) -> list[ExtractWindow]:
        """The window cut into consecutive ``days``-long pieces (same change bounds).

        A long backfill is processed piece by piece so memory stays bounded by
        the piece, not the range; a row spanning a cut is read by both pieces
        and upserted idempotently.
        """
        if self.start is None or self.end is None or days <= 0:
            return [self]
        step, pieces, cursor = dt.timedelta(days=days), [], self.start
        while cursor < self.end:
            nxt = min(cursor + step, self.end)
            pieces.append(ExtractWindow(cursor, nxt, self.changed_since, self.changed_until))
            cursor = nxt
        return pieces or [self]


def time_cmp(col: sa.ColumnElement, op: str, value: dt.datetime, dialect: str) -> sa.ColumnElement[bool]:
    """``col <op> value`` for an LMS timestamp column.

    ``dialect`` ``"sqlite"`` compares free-form ISO-8601 text through
    ``julianday``; anything else compares natively (pass ``"native"`` for a
    column written by SQLAlchemy, e.g. in the warehouse).
    """
    value = to_utc(value)
    left: sa.ColumnElement[Any]
    right: sa.ColumnElement[Any]
    if dialect == "sqlite":
        left = sa.func.julianday(col)
        right = sa.func.julianday(sa.literal(value.isoformat(sep=" ")))
    else:
        left, right = col, sa.literal(value, sa.DateTime(timezone=True))
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


def window_filter(table: sa.Table, window: ExtractWindow, dialect: str) -> list[sa.ColumnElement[bool]]:
    """Conditions selecting the rows of ``window`` (see :class:`ExtractWindow`)."""
    conds: list[sa.ColumnElement[bool]] = []
    if window.start is not None:
        conds.append(time_cmp(table.c.updated_at, ">=", window.start, dialect))
    if window.end is not None:
        conds.append(time_cmp(table.c.started_at, "<", window.end, dialect))
    if window.changed_since is not None:
        conds.append(time_cmp(table.c.updated_at, ">", window.changed_since, dialect))
    if window.changed_until is not None:
        conds.append(time_cmp(table.c.updated_at, "<=", window.changed_until, dialect))
    return conds


def readable_time(col: sa.ColumnElement, dialect: str) -> sa.ColumnElement[bool]:
    """A time pandas can hold: inside :data:`READABLE_FROM` .. :data:`READABLE_UNTIL` (and, on SQLite, ISO-8601 text)."""
    inside = sa.and_(time_cmp(col, ">=", READABLE_FROM, dialect), time_cmp(col, "<=", READABLE_UNTIL, dialect))
    return sa.and_(sa.func.typeof(col) == "text", inside) if dialect == "sqlite" else inside


def unreadable_time(col: sa.ColumnElement, dialect: str) -> sa.ColumnElement[bool]:
    """A time no window can place: NULL, out of the readable range (``infinity``, BC), on SQLite no
    ISO-8601 text (garbage, a number). On PostgreSQL these are index ranges of an indexed column."""
    if dialect == "sqlite":
        return sa.or_(sa.func.julianday(col).is_(None), sa.not_(readable_time(col, dialect)))
    return sa.or_(col.is_(None), col < READABLE_FROM, col > READABLE_UNTIL)


def attempts_in_window(table: sa.Table, window: ExtractWindow, dialect: str) -> sa.ColumnElement[bool]:
    """The rows of ``window``. A recompute also reads the rows whose times cannot be read, so
    cleaning rejects and counts them (the column named) instead of their vanishing unseen: those
    whose ``updated_at`` cannot be read in every window, those whose ``started_at`` cannot in the
    window of their ``updated_at``."""
    conds = sa.and_(sa.true(), *window_filter(table, window, dialect))
    incremental = window.changed_since is not None or window.changed_until is not None
    if incremental:
        return conds
    updated_in_window: list[sa.ColumnElement[bool]] = []
    if window.start is not None:
        updated_in_window.append(time_cmp(table.c.updated_at, ">=", window.start, dialect))
    if window.end is not None:
        updated_in_window.append(time_cmp(table.c.updated_at, "<", window.end, dialect))
    return sa.or_(
        conds,
        sa.and_(*updated_in_window, unreadable_time(table.c.started_at, dialect)),
        unreadable_time(table.c.updated_at, dialect),
    )


def _select(table: sa.Table, fields: list[str]) -> sa.Select:
    return sa.select(*[table.c[f].label(f) for f in fields])


def exam_attempts(profile: SourceProfile, window: ExtractWindow, dialect: str) -> sa.Select:
    table = profile.table("attempts")
    return _select(table, EXAM_ATTEMPT_FIELDS).where(attempts_in_window(table, window, dialect))


def content_attempts(profile: SourceProfile, window: ExtractWindow, dialect: str) -> sa.Select:
    table = profile.table("content_attempts")
    return _select(table, CONTENT_ATTEMPT_FIELDS).where(attempts_in_window(table, window, dialect))


def dimension(profile: SourceProfile, logical: str) -> sa.Select:
    return _select(profile.table(logical), DIMENSION_FIELDS[logical])


def users_by_id(profile: SourceProfile, user_ids: Collection[int]) -> sa.Select:
    """The ``Users`` rows of ``user_ids`` (e.g. the mentors a notification run needs)."""
    table = profile.table("users")
    return _select(table, DIMENSION_FIELDS["users"]).where(table.c.id.in_(sorted(user_ids)))


def users_matching(profile: SourceProfile, key: str) -> sa.Select:
    """The ``Users`` rows whose id, username or e-mail (case-insensitive) is ``key`` (issue 12: prefs)."""
    table = profile.table("users")
    match = [table.c.username == key, sa.func.lower(table.c.email) == key.lower()]
    if key.isdigit():
        match.append(table.c.id == int(key))
    return _select(table, DIMENSION_FIELDS["users"]).where(sa.or_(*match))


def exam_attempt_history(
    profile: SourceProfile, student_ids: Collection[int] | None, until: dt.datetime | None, dialect: str
) -> sa.Select:
    """``id, user_id, exam_id, started_at`` of attempts that may precede a batch (for attempt numbers)."""
    table = profile.table("attempts")
    stmt = _select(table, ["id", "user_id", "exam_id", "started_at"])
    if until is not None:
        stmt = stmt.where(time_cmp(table.c.started_at, "<", until, dialect))
    if student_ids is not None and len(student_ids) <= HISTORY_IN_LIST_LIMIT:
        stmt = stmt.where(table.c.user_id.in_(sorted(student_ids)))
    return stmt


def changed_rows(profile: SourceProfile, logical: str, since: dt.datetime | None, dialect: str) -> sa.Select:
    """``id, started_at, updated_at`` of rows changed after ``since`` (an index range scan)."""
    table = profile.table(logical)
    stmt = _select(table, ["id", "started_at", "updated_at"])
    return stmt if since is None else stmt.where(time_cmp(table.c.updated_at, ">", since, dialect))


def rows_by_id(profile: SourceProfile, logical: str, ids: Collection[int]) -> sa.Select:
    """``id, started_at, updated_at`` of the rows ``ids`` (announced by LMS webhooks; a primary-key lookup)."""
    table = profile.table(logical)
    return _select(table, ["id", "started_at", "updated_at"]).where(table.c.id.in_(sorted(ids)))


def earliest_start(profile: SourceProfile, logical: str, dialect: str) -> sa.Select:
    """The oldest readable ``started_at`` of an attempts table (read once, on the first poll)."""
    col = profile.table(logical).c.started_at
    return (
        sa.select(col.label("started_at")).where(readable_time(col, dialect)).order_by(_time_key(col, dialect)).limit(1)
    )


def newest_change(profile: SourceProfile, logical: str, until: dt.datetime, dialect: str) -> sa.Select:
    """The newest readable ``updated_at`` not after ``until`` (the LMS's now: never a row from the future);
    an index range scan on PostgreSQL."""
    col = profile.table(logical).c.updated_at
    stmt = sa.select(col.label("updated_at")).where(time_cmp(col, "<=", until, dialect), readable_time(col, dialect))
    return stmt.order_by(_time_key(col, dialect).desc()).limit(1)


def oldest_change(
    profile: SourceProfile, logical: str, after: dt.datetime | None, until: dt.datetime, dialect: str
) -> sa.Select:
    """The oldest readable ``updated_at`` in ``(after, until]`` (an index range scan on PostgreSQL)."""
    col = profile.table(logical).c.updated_at
    stmt = sa.select(col.label("updated_at")).where(time_cmp(col, "<=", until, dialect), readable_time(col, dialect))
    if after is not None:
        stmt = stmt.where(time_cmp(col, ">", after, dialect))
    return stmt.order_by(_time_key(col, dialect)).limit(1)


def database_now(dialect: str) -> sa.Select:
    """The LMS database's own clock (UTC text on SQLite): what ``updated_at`` values are compared with."""
    if dialect == "sqlite":
        return sa.select(sa.func.strftime("%Y-%m-%d %H:%M:%f", "now").label("now"))
    return sa.select(sa.func.now().label("now"))


def _time_key(col: sa.ColumnElement, dialect: str) -> sa.ColumnElement:
    """What orders times: the column itself, or on SQLite (text in any offset) its ``julianday``."""
    return sa.func.julianday(col) if dialect == "sqlite" else col
