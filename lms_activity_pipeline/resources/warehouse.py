"""The event store (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence

import pandas as pd
import sqlalchemy as sa
from dagster import ConfigurableResource
from pydantic import PrivateAttr
from sqlalchemy.engine import Engine

from lms_activity_pipeline import db
from lms_activity_pipeline.config import DEFAULT_WAREHOUSE_SCHEMA, redact_url
from lms_activity_pipeline.domain.features import History
from lms_activity_pipeline.lms.queries import ExtractWindow, window_filter
from lms_activity_pipeline.warehouse import features, load
from lms_activity_pipeline.warehouse.engine import open_warehouse, physical_schema
from lms_activity_pipeline.warehouse.outbox import Outbox


class WarehouseResource(ConfigurableResource):
    """The warehouse at ``LMS_WAREHOUSE_URL``; tables live in ``LMS_WAREHOUSE_SCHEMA`` on PostgreSQL."""

    url: str
    schema_name: str = DEFAULT_WAREHOUSE_SCHEMA

    _engine: Engine | None = PrivateAttr(default=None)

    def __repr_args__(self):  # noqa: ANN204 - pydantic's repr hook
        """The URL's credentials never appear in a repr (logs, tracebacks, debuggers)."""
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "url" and isinstance(value, str) else value)

    @property
    def schema(self) -> str | None:
        """The physical schema: ``schema_name`` on PostgreSQL, none on SQLite."""
        return physical_schema(self.engine, self.schema_name)

    @property
    def engine(self) -> Engine:
        """An engine whose Core tables resolve to the configured schema, migrated on first use."""
        if self._engine is None:
            self._engine = open_warehouse(self.url, self.schema_name)
        return self._engine

    def read(self, stmt: sa.Select) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return db.read_frame(conn, stmt)

    def read_typed(self, stmt: sa.Select) -> pd.DataFrame:
        """``stmt``'s rows with columns converted to their SQL types."""
        with self.engine.connect() as conn:
            return db.read_typed(conn, stmt)

    def count(self, stmt: sa.Select) -> int:
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

