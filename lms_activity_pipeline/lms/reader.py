"""Reading the LMS: every query the pipeline makes, on a read-only engine, as typed and validated frames.

No Dagster: the ``lms`` resource (``defs/resources.py``) hands out an :class:`LMSReader`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lms_activity_pipeline import db
from lms_activity_pipeline.domain import cleaning
from lms_activity_pipeline.domain.classification import Dimensions
from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.lms import queries
from lms_activity_pipeline.lms.queries import ExtractWindow
from lms_activity_pipeline.lms.schema import DEFAULT_PROFILE, SourceProfile
from lms_activity_pipeline.urls import redact_url

#: Ids per ``IN`` list when looking users up.
USER_ID_CHUNK = 5000
#: The attempts tables by logical name, and their names in rejects and logs.
SOURCE_NAMES = {"attempts": "Attempts", "content_attempts": "ContentAttempts"}

_DIMENSION_SPECS = {
    "users": ("Users", cleaning.USER_COLUMNS),
    "courses": ("Courses", cleaning.COURSE_COLUMNS),
    "exams": ("Exams", cleaning.EXAM_COLUMNS),
    "contents": ("Contents", cleaning.CONTENT_COLUMNS),
    "mentor_assignments": ("MentorAssignments", cleaning.ASSIGNMENT_COLUMNS),
}


class LMSReader:
    """Read-only access to the LMS at ``database_url`` (``LMS_DATABASE_URL``).

    ``profile_path`` points at a JSON source profile for an LMS whose table and column names differ
    from the reference schema. Engines are shared per process and URL, so a reader is cheap to make.
    """

    def __init__(self, database_url: str, profile_path: str | None = None) -> None:
        self.database_url = database_url
        self.profile_path = profile_path
        self._engine: Engine | None = None

    def __repr__(self) -> str:
        return f"LMSReader({redact_url(self.database_url)!r})"

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = db.shared_engine(
                ("lms", self.database_url),
                lambda: db.create_engine(self.database_url, read_only=True, variable="LMS_DATABASE_URL"),
            )
        return self._engine

    @property
    def profile(self) -> SourceProfile:
        return SourceProfile.from_json(self.profile_path) if self.profile_path else DEFAULT_PROFILE

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def check(self) -> None:
        """Fail with one line naming ``LMS_DATABASE_URL`` when the LMS is unreachable."""
        db.check_connection(self.engine, "LMS_DATABASE_URL")

    def _read(self, stmt) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return db.read_frame(conn, stmt)

    def exam_attempts(self, window: ExtractWindow) -> pd.DataFrame:
        """Raw ``Attempts`` rows of the window, values as stored."""
        return self._read(queries.exam_attempts(self.profile, window, self.dialect))

    def content_attempts(self, window: ExtractWindow) -> pd.DataFrame:
        """Raw ``ContentAttempts`` rows of the window, values as stored."""
        return self._read(queries.content_attempts(self.profile, window, self.dialect))

    def dimensions(self) -> tuple[Dimensions, pd.DataFrame]:
        """Typed users, courses, exams, contents and mentor assignments, plus rejected rows."""
        frames: dict[str, pd.DataFrame] = {}
        rejects = [cleaning.empty_rejects()]
        with self.engine.connect() as conn:
            for logical, (source, spec) in _DIMENSION_SPECS.items():
                raw = db.read_frame(conn, queries.dimension(self.profile, logical))
                frames[logical], bad = cleaning.clean_dimension(source, raw, spec)
                rejects.append(bad)
        dims = Dimensions(
            users=frames["users"],
            courses=frames["courses"],
            exams=frames["exams"],
            contents=frames["contents"],
            assignments=frames["mentor_assignments"],
        )
        return dims, pd.concat(rejects, ignore_index=True)

    def users(self, user_ids: Collection[int]) -> pd.DataFrame:
        """Typed ``Users`` rows (``id, username, email, full_name, role, is_active``) of ``user_ids``."""
        if not user_ids:
            return pd.DataFrame(columns=[c.name for c in cleaning.USER_COLUMNS])
        raw = self._read(queries.users_by_id(self.profile, user_ids))
        return cleaning.clean_dimension("Users", raw, cleaning.USER_COLUMNS)[0]

    def users_matching(self, key: str) -> pd.DataFrame:
        """Typed ``Users`` rows whose id, username or e-mail is ``key``."""
        raw = self._read(queries.users_matching(self.profile, key.strip()))
        return cleaning.clean_dimension("Users", raw, cleaning.USER_COLUMNS)[0]

    def existing_user_ids(self, ids: Collection[int]) -> set[int]:
        """The ids among ``ids`` that are rows of the LMS ``Users`` table."""
        wanted, found = sorted(set(ids)), set()
        for i in range(0, len(wanted), USER_ID_CHUNK):
            raw = self._read(queries.users_by_id(self.profile, wanted[i : i + USER_ID_CHUNK]))
            found |= set(cleaning.parse_int(raw["id"]).dropna().astype("int64").tolist())
        return found

    def exam_attempt_history(
        self, student_ids: Collection[int] | None, until: dt.datetime | None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``id, user_id, exam_id, started_at`` of the students' (None: all) attempts started before ``until``,
        and the rows left out because a value cannot be read (with the reason)."""
        raw = self._read(queries.exam_attempt_history(self.profile, student_ids, until, self.dialect))
        return cleaning.clean_attempt_history(raw)

    def database_now(self) -> dt.datetime:
        """The LMS database's clock (``now()``; SQLite's ``'now'``), which its ``updated_at`` values follow."""
        with self.engine.connect() as conn:
            value = conn.execute(queries.database_now(self.dialect)).scalar_one()
        return to_utc(value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value))

    def changed_rows(self, logical: str, since: dt.datetime | None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``id, started_at, updated_at`` (typed) of ``logical`` rows changed after ``since``, and the
        rows whose values cannot be read (``updated_at = 'infinity'``, a BC ``started_at``), with the reason."""
        raw = self._read(queries.changed_rows(self.profile, logical, since, self.dialect))
        return cleaning.clean_changes(SOURCE_NAMES[logical], raw)

    def rows_by_id(self, logical: str, ids: Collection[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Like :meth:`changed_rows`, for the rows ``ids`` whatever their ``updated_at`` (LMS webhooks)."""
        raw = self._read(queries.rows_by_id(self.profile, logical, ids))
        return cleaning.clean_changes(SOURCE_NAMES[logical], raw)

    def earliest_start(self) -> dt.datetime | None:
        """The oldest readable ``started_at`` across both attempts tables."""
        found = [self._time(queries.earliest_start(self.profile, logical, self.dialect)) for logical in SOURCE_NAMES]
        valid = [v for v in found if v is not None]
        return min(valid) if valid else None

    def high_water_marks(self, until: dt.datetime) -> dict[str, dt.datetime | None]:
        """Newest readable ``updated_at`` of each attempts table not after ``until`` (the LMS's now)."""
        return {
            logical: self._time(queries.newest_change(self.profile, logical, until, self.dialect))
            for logical in SOURCE_NAMES
        }

    def oldest_change(self, logical: str, after: dt.datetime | None, until: dt.datetime) -> dt.datetime | None:
        """The oldest readable ``updated_at`` of ``logical`` in ``(after, until]``."""
        return self._time(queries.oldest_change(self.profile, logical, after, until, self.dialect))

    def _time(self, stmt: sa.Select) -> dt.datetime | None:
        """The single time a one-column query returns, or None."""
        raw = self._read(stmt)
        values = cleaning.parse_times(raw.iloc[:, 0]).dropna()  # the queries select readable times only
        return values.iloc[0].to_pydatetime() if len(values) else None
