"""The event store (SQLite by default, PostgreSQL in production): every read and write the pipeline makes.

No Dagster: the ``warehouse`` resource (``defs/resources.py``) hands out a :class:`Warehouse`. Opening
one connects nothing; :meth:`Warehouse.migrate` creates and additively migrates the tables, and is
called once by whoever starts work (a run's resource set-up, the CLI, the API).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Collection, Sequence
from zoneinfo import ZoneInfo

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lms_activity_pipeline import db
from lms_activity_pipeline.db import Query
from lms_activity_pipeline.domain.features import History
from lms_activity_pipeline.domain.risk import Names
from lms_activity_pipeline.domain.risk_model import RiskModel
from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.lms.queries import ExtractWindow, window_filter
from lms_activity_pipeline.settings import DEFAULT_WAREHOUSE_SCHEMA
from lms_activity_pipeline.urls import redact_url
from lms_activity_pipeline.warehouse import features, load
from lms_activity_pipeline.warehouse import risk as risk_sql
from lms_activity_pipeline.warehouse.engine import open_warehouse, physical_schema
from lms_activity_pipeline.warehouse.migrate import migrate
from lms_activity_pipeline.warehouse.outbox import Outbox

#: Warehouses this process has migrated (url, schema, pid).
_MIGRATED: set[tuple[str, str, int]] = set()


class Warehouse:
    """The warehouse at ``url`` (``LMS_WAREHOUSE_URL``); tables live in ``schema_name`` on PostgreSQL."""

    def __init__(self, url: str, schema_name: str = DEFAULT_WAREHOUSE_SCHEMA) -> None:
        self.url = url
        self.schema_name = schema_name
        self._engine: Engine | None = None

    def __repr__(self) -> str:
        return f"Warehouse({redact_url(self.url)!r}, {self.schema_name!r})"

    @property
    def engine(self) -> Engine:
        """An engine whose Core tables resolve to the configured schema (checked on first use, not migrated)."""
        if self._engine is None:
            self._engine = db.shared_engine(
                ("warehouse", self.url, self.schema_name),
                lambda: open_warehouse(self.url, self.schema_name, create=False),
            )
        return self._engine

    @property
    def schema(self) -> str | None:
        """The physical schema: ``schema_name`` on PostgreSQL, none on SQLite."""
        return physical_schema(self.engine, self.schema_name)

    def migrate(self) -> list[str]:
        """Create the schema, tables, columns and indexes that are missing; returns what changed.

        Once per process and warehouse: later calls return ``[]`` at once (every run step and sensor
        tick calls it).
        """
        key = (self.url, self.schema_name, os.getpid())
        if key in _MIGRATED:
            return []
        changes = migrate(self.engine, self.schema)
        _MIGRATED.add(key)
        return changes

    def read(self, stmt: Query) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return db.read_frame(conn, stmt)

    def read_typed(self, stmt: Query) -> pd.DataFrame:
        """``stmt``'s rows with columns converted to their SQL types."""
        with self.engine.connect() as conn:
            return db.read_typed(conn, stmt)

    def count(self, stmt: Query) -> int:
        """How many rows ``stmt`` returns."""
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery())).scalar_one())

    def feature_inputs(
        self, start: dt.datetime, end: dt.datetime, students: Collection[int] | None = None
    ) -> tuple[pd.DataFrame, History]:
        """Events of ``[start, end)`` (of ``students`` only, if given) and the history their features need."""
        with self.engine.connect() as conn:
            return features.read_feature_inputs(conn, start, end, students)

    def stored_timeline(self, start: dt.datetime, end: dt.datetime) -> pd.DataFrame | None:
        """The window's ``ai_ready_events`` as stored (event, student, type, exam, time), or None
        when no row comes after the window (nothing later can be out of date)."""
        with self.engine.connect() as conn:
            if not features.has_rows_after(conn, end):
                return None
            return features.stored_timeline(conn, start, end)

    def window_events(self, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
        """Events of ``[start, end)`` with the metadata fields the features use."""
        return self.read_typed(features.window_events(start, end))

    def write_ai_ready_events(
        self, frame: pd.DataFrame, start: dt.datetime, end: dt.datetime, *, whole_window: bool = True
    ) -> load.UpsertResult:
        with db.write_transaction(self.engine) as conn:
            return features.write_ai_ready_events(conn, frame, start, end, whole_window=whole_window)

    def write_daily_activity(self, frame: pd.DataFrame, first_day: dt.date, end_day: dt.date) -> load.UpsertResult:
        with db.write_transaction(self.engine) as conn:
            return features.write_daily_activity(conn, frame, first_day, end_day)

    def upsert(
        self, table: sa.Table, frame: pd.DataFrame, key: str | Sequence[str] = "id", touch: str | None = None
    ) -> load.UpsertResult:
        """Upsert ``frame`` by ``key`` (one column or several); ``touch`` is a timestamp column set when a row is written."""
        with db.write_transaction(self.engine) as conn:
            return load.upsert(conn, table, frame, key, touch=touch)

    def upsert_events(self, events: pd.DataFrame) -> load.UpsertResult:
        with db.write_transaction(self.engine) as conn:
            return load.upsert_events(conn, events)

    def mark_classified(self, table: sa.Table, versions: pd.DataFrame) -> int:
        """Note the staged versions ``lms_activity_events`` processed (``id, updated_at, reason``)."""
        with db.write_transaction(self.engine) as conn:
            return load.mark_classified(conn, table, versions)

    def outbox(self) -> Outbox:
        """The notification outbox (``lms_event_log``)."""
        return Outbox(self.engine)

    def attempts_in_window(self, table: sa.Table, window: ExtractWindow) -> pd.DataFrame:
        """Staged attempts whose lifetime overlaps the window (the LMS extraction predicate)."""
        cols = [c for c in table.columns if not c.name.startswith("_")]  # the LMS's columns, not our bookkeeping
        return self.read(sa.select(*cols).where(*window_filter(table, window, "native")))

    def rows_per_day(
        self, table: sa.Table, column: str, start: dt.datetime, end: dt.datetime, timezone: str
    ) -> dict[str, int]:
        """Rows of ``table`` per local day (``YYYY-MM-DD`` in ``timezone``) of ``column`` within ``[start, end)``.

        A date column is grouped in SQL; a time column is read for the window and bucketed here (the
        databases disagree on time zones), one indexed range read.
        """
        col = table.c[column]
        if isinstance(col.type, sa.Date):
            zone = ZoneInfo(timezone)
            lo, hi = start.astimezone(zone).date(), end.astimezone(zone).date()
            stmt = sa.select(col, sa.func.count()).where(col >= lo, col < hi).group_by(col)
            with self.engine.connect() as conn:
                return {str(day)[:10]: int(n) for day, n in conn.execute(stmt)}
        times = self.read_typed(sa.select(col).where(col >= to_utc(start), col < to_utc(end)))[column]
        days = times.dt.tz_convert(timezone).dt.strftime("%Y-%m-%d")
        return {str(day): int(n) for day, n in days.value_counts().items()}

    # --- students at risk ---
    def risk_inputs(self, start: dt.datetime, cutoff: dt.datetime) -> tuple[pd.DataFrame, pd.DataFrame, Names]:
        """Events of ``[start, cutoff)``, the exams their students passed before ``cutoff``, and names
        (``student_risk``)."""
        with self.engine.connect() as conn:
            return risk_sql.read_risk_inputs(conn, start, cutoff)

    def write_student_risk(self, rows: pd.DataFrame, as_of: dt.date) -> load.UpsertResult:
        with db.write_transaction(self.engine) as conn:
            return risk_sql.write_student_risk(conn, rows, as_of)

    # learned at-risk model (issue 13, LMS_RISK_MODEL=learned)
    def save_risk_model(self, model: RiskModel) -> None:
        with db.write_transaction(self.engine) as conn:
            risk_sql.save_risk_model(conn, model)

    def risk_model(self, version: str | None = None) -> RiskModel | None:
        """The stored learned model of ``version`` (default: the latest trained), or None."""
        with self.engine.connect() as conn:
            return risk_sql.load_risk_model(conn, version)

    def risk_feedback_labels(self) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return risk_sql.read_feedback(conn)

    def student_risk(
        self, as_of: dt.date | None = None, levels: tuple[str, ...] | None = None, course_id: int | None = None
    ) -> pd.DataFrame:
        """``student_risk`` of ``as_of`` (default: the latest day computed), worst first; empty if none."""
        with self.engine.connect() as conn:
            day = risk_sql.latest_day(conn) if as_of is None else as_of
            if day is None:
                return db.read_typed(conn, risk_sql.risk_rows(dt.date.min, levels, course_id))
            return db.read_typed(conn, risk_sql.risk_rows(day, levels, course_id))
