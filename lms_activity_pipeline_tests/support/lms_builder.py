"""Hand-crafted LMS databases for tests, written through the reference schema."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from lms_activity_pipeline import db
from lms_activity_pipeline.lms.schema import REFERENCE

UTC = dt.UTC


def t(day: int, hour: int = 12, minute: int = 0, second: int = 0, month: int = 5) -> dt.datetime:
    """A UTC time in May 2024 (day of month, hour, minute)."""
    return dt.datetime(2024, month, day, hour, minute, second, tzinfo=UTC)


class _StoredAsGiven(sa.types.UserDefinedType):
    """A NUMERIC column that passes values through unconverted (SQLite then stores text as text)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "NUMERIC"


def _relaxed(metadata: sa.MetaData, dialect: str) -> sa.MetaData:
    """A copy of the reference schema without NOT NULL (real LMSs are messy).

    On PostgreSQL the score columns become text so they can hold junk; SQLite
    keeps its NUMERIC columns, which store whatever is inserted, as in a real LMS.
    """
    relaxed = sa.MetaData()
    junk = _StoredAsGiven() if dialect == "sqlite" else sa.Text()
    for table in metadata.sorted_tables:
        sa.Table(
            table.name,
            relaxed,
            *[
                sa.Column(
                    c.name,
                    junk if c.name in ("score", "progress_percent") else c.type,
                    primary_key=c.primary_key,
                    nullable=True,
                )
                for c in table.columns
            ],
        )
    return relaxed


class LMSBuilder:
    """Collects rows and writes them to a reference-schema LMS at ``url``.

    ``strict=False`` creates the tables without NOT NULL constraints (and with
    text score columns on PostgreSQL), so tests can store the bad rows a real LMS may hold.
    """

    def __init__(self, url: str, *, strict: bool = True) -> None:
        self.engine = db.create_engine(url)
        self.metadata = REFERENCE if strict else _relaxed(REFERENCE, self.engine.dialect.name)
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.metadata.drop_all(self.engine)
        self.metadata.create_all(self.engine)

    def add(self, table: str, **row: Any) -> LMSBuilder:
        self.rows[table].append(row)
        return self

    def user(self, id: int, username: str, role: str = "student", **kw: Any) -> LMSBuilder:
        kw.setdefault("email", f"{username}@example.edu")
        kw.setdefault("full_name", username.title())
        kw.setdefault("is_active", True)
        return self.add("Users", id=id, username=username, role=role, **kw)

    def course(self, id: int, title: str) -> LMSBuilder:
        return self.add("Courses", id=id, title=title)

    def exam(
        self, id: int, course_id: int, title: str, max_score: float = 50, pass_score: float | None = 35
    ) -> LMSBuilder:
        return self.add("Exams", id=id, course_id=course_id, title=title, max_score=max_score, pass_score=pass_score)

    def content(
        self, id: int, course_id: int, title: str, content_type: str, duration_seconds: int | None = None
    ) -> LMSBuilder:
        return self.add(
            "Contents",
            id=id,
            course_id=course_id,
            title=title,
            content_type=content_type,
            duration_seconds=duration_seconds,
        )

    def assign(
        self, id: int, student_id: int, mentor_id: int, assigned_at: dt.datetime, ended_at: dt.datetime | None = None
    ) -> LMSBuilder:
        return self.add(
            "MentorAssignments",
            id=id,
            student_id=student_id,
            mentor_id=mentor_id,
            assigned_at=assigned_at,
            ended_at=ended_at,
        )

    def attempt(self, id: int, user_id: Any, exam_id: Any, status: str, started_at: Any, **kw: Any) -> LMSBuilder:
        times = [v for v in (started_at, kw.get("submitted_at"), kw.get("graded_at")) if isinstance(v, dt.datetime)]
        kw.setdefault("updated_at", max(times) if times else started_at)
        for name in ("submitted_at", "graded_at", "score"):
            kw.setdefault(name, None)
        return self.add("Attempts", id=id, user_id=user_id, exam_id=exam_id, status=status, started_at=started_at, **kw)

    def content_attempt(
        self, id: int, user_id: Any, content_id: Any, status: str, started_at: Any, **kw: Any
    ) -> LMSBuilder:
        times = [v for v in (started_at, kw.get("completed_at")) if isinstance(v, dt.datetime)]
        kw.setdefault("updated_at", max(times) if times else started_at)
        kw.setdefault("completed_at", None)
        kw.setdefault("progress_percent", 0)
        kw.setdefault("time_spent_seconds", 0)
        return self.add(
            "ContentAttempts", id=id, user_id=user_id, content_id=content_id, status=status, started_at=started_at, **kw
        )

    def school(self) -> LMSBuilder:
        """A small standard cast: students 1-3, mentors 10-11, one course, two exams, three contents."""
        (
            self.user(1, "alice", full_name="Alice Liddell")
            .user(2, "bob", full_name="Bob Stone")
            .user(3, "carol", full_name="Carol Danvers")
            .user(10, "mentor_m", role="mentor", full_name="Maria Mentor")
            .user(11, "mentor_n", role="mentor", full_name="Nils Mentor")
            .course(100, "Algebra I")
            .exam(200, 100, "Quadratics quiz", max_score=50, pass_score=35)
            .exam(201, 100, "Final exam", max_score=100, pass_score=60)
            .content(300, 100, "Intro video", "video", 600)
            .content(301, 100, "Reading notes", "article")
            .content(302, 100, "Podcast", "audio", 1200)
            .assign(1, 1, 10, t(1, 0))
            .assign(2, 2, 10, t(1, 0))
            .assign(3, 2, 11, t(1, 0))
            .assign(4, 3, 11, t(1, 0))
        )
        return self

    def write(self) -> LMSBuilder:
        """Insert the collected rows (replacing none: call once per table or after clear)."""
        with self.engine.begin() as conn:
            for name, rows in self.rows.items():
                table = self.metadata.tables[name]
                conn.execute(table.insert(), [_fill(table, r) for r in rows])
        self.rows.clear()
        return self

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)


def _fill(table: sa.Table, row: dict[str, Any]) -> dict[str, Any]:
    return {c.name: row.get(c.name) for c in table.columns if c.name in row or c.server_default is None}
