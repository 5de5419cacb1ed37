"""The reference LMS schema and source profiles that rename it.

``REFERENCE`` holds the SQLAlchemy Core tables exactly as the contract writes
them; the demo LMS is created from them. A :class:`SourceProfile` maps the
logical names used by the pipeline (those of the reference schema) to the
physical names of a real LMS; :meth:`SourceProfile.tables` derives query tables
from ``REFERENCE`` whose columns keep the logical names as their ``key``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

REFERENCE = sa.MetaData()
TS = sa.DateTime(timezone=True)

sa.Table(
    "Users",
    REFERENCE,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("username", sa.Text, nullable=False, unique=True),
    sa.Column("email", sa.Text),
    sa.Column("full_name", sa.Text),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
)
sa.Table(
    "Courses",
    REFERENCE,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("title", sa.Text, nullable=False),
)
sa.Table(
    "Exams",
    REFERENCE,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("course_id", sa.BigInteger, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("max_score", sa.Numeric, nullable=False),
    sa.Column("pass_score", sa.Numeric, nullable=False),
)
sa.Table(
    "Contents",
    REFERENCE,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("course_id", sa.BigInteger, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("duration_seconds", sa.Integer),
)
sa.Table(
    "MentorAssignments",
    REFERENCE,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("student_id", sa.BigInteger, nullable=False),
    sa.Column("mentor_id", sa.BigInteger, nullable=False),
    sa.Column("assigned_at", TS, nullable=False),
    sa.Column("ended_at", TS),
)
sa.Table(
    "Attempts",
    REFERENCE,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("exam_id", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("submitted_at", TS),
    sa.Column("graded_at", TS),
    sa.Column("score", sa.Numeric),
    sa.Column("updated_at", TS, nullable=False),
    sa.Index("attempts_updated_at", "updated_at"),
)
sa.Table(
    "ContentAttempts",
    REFERENCE,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("content_id", sa.BigInteger, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("progress_percent", sa.Numeric, nullable=False, server_default="0"),
    sa.Column("time_spent_seconds", sa.Integer, nullable=False, server_default="0"),
    sa.Column("started_at", TS, nullable=False),
    sa.Column("completed_at", TS),
    sa.Column("updated_at", TS, nullable=False),
    sa.Index("content_attempts_updated_at", "updated_at"),
)

#: Logical table name -> reference table name.
LOGICAL_TABLES: dict[str, str] = {
    "users": "Users",
    "courses": "Courses",
    "exams": "Exams",
    "contents": "Contents",
    "mentor_assignments": "MentorAssignments",
    "attempts": "Attempts",
    "content_attempts": "ContentAttempts",
}

#: Columns whose values are timestamps (parsed to UTC on extraction).
TIMESTAMP_COLUMNS = {
    name: [c.name for c in REFERENCE.tables[ref].columns if isinstance(c.type, sa.DateTime)]
    for name, ref in LOGICAL_TABLES.items()
}


@dataclass(frozen=True)
class SourceProfile:
    """Physical names of a real LMS. Anything not mapped keeps its reference name.

    ``tables`` maps a logical table (``attempts``) to its physical name;
    ``columns`` maps a logical table to ``{logical column: physical column}``.
    ``schema`` is the database schema of the LMS tables (PostgreSQL), if any.
    """

    tables: Mapping[str, str] = field(default_factory=dict)
    columns: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    schema: str | None = None

    @classmethod
    def from_json(cls, path: str | Path) -> SourceProfile:
        """Load a profile from a JSON file ``{"schema":..., "tables":{...}, "columns":{...}}``."""
        data = json.loads(Path(path).read_text())
        unknown = set(data.get("tables", {})) | set(data.get("columns", {}))
        unknown -= set(LOGICAL_TABLES)
        if unknown:
            raise ValueError(f"source profile {path}: unknown table(s) {sorted(unknown)}")
        return cls(tables=data.get("tables", {}), columns=data.get("columns", {}), schema=data.get("schema"))

    def table(self, logical: str) -> sa.Table:
        """A query table for ``logical`` whose columns are addressed by their logical names."""
        return self.tables_metadata().tables[self._qualified(logical)]

    def tables_metadata(self) -> sa.MetaData:
        return _profile_metadata(self)

    def _qualified(self, logical: str) -> str:
        name = self.tables.get(logical, LOGICAL_TABLES[logical])
        return f"{self.schema}.{name}" if self.schema else name

    def __hash__(self) -> int:  # mappings are not hashable; profiles are small
        return hash(json.dumps([dict(self.tables), {k: dict(v) for k, v in self.columns.items()}, self.schema]))


_PROFILE_CACHE: dict[int, sa.MetaData] = {}


def _profile_metadata(profile: SourceProfile) -> sa.MetaData:
    key = hash(profile)
    if key not in _PROFILE_CACHE:
        md = sa.MetaData(schema=profile.schema)
        for logical, ref_name in LOGICAL_TABLES.items():
            ref = REFERENCE.tables[ref_name]
            renames = profile.columns.get(logical, {})
            sa.Table(
                profile.tables.get(logical, ref_name),
                md,
                *[sa.Column(renames.get(c.name, c.name), c.type, key=c.name) for c in ref.columns],
            )
        _PROFILE_CACHE[key] = md
    return _PROFILE_CACHE[key]


DEFAULT_PROFILE = SourceProfile()
