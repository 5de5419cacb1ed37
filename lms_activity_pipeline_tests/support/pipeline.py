"""Test helpers: definitions for a backend, runs, and warehouse reads."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import pandas as pd
import sqlalchemy as sa
from dagster import AssetCheckEvaluation, DagsterInstance, Definitions, ExecuteInProcessResult

from lms_activity_pipeline import db, names
from lms_activity_pipeline.defs.runs import run_ingest, run_notify
from lms_activity_pipeline.settings import Settings, load_settings
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.store import Warehouse
from lms_activity_pipeline_tests.conftest import Backend


def backend_env(backend: Backend, **env: str) -> dict[str, str]:
    """The environment of a code location on ``backend`` (partitions from 2024-05-01, the tests' data)."""
    return {
        "LMS_DATABASE_URL": backend.lms_url,
        "LMS_WAREHOUSE_URL": backend.warehouse_url,
        "LMS_PARTITIONS_START": "2024-05-01",
        **env,
    }


def settings_for(backend: Backend, **env: str) -> Settings:
    return load_settings(backend_env(backend, **env))


def load_definitions(env: dict[str, str], resources: dict[str, Any] | None = None) -> Definitions:
    """The code location as Dagster loads it with ``env`` in the environment: ``defs/`` is imported afresh
    (its definitions read the settings at import), and the resources get the values ``env`` gives them, so
    definitions of several backends can live side by side in one test. ``resources`` replace resources by key."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        for name in [
            m
            for m in sys.modules
            if m == "lms_activity_pipeline.definitions" or m.startswith("lms_activity_pipeline.defs")
        ]:
            del sys.modules[name]
        defs: Definitions = importlib.import_module("lms_activity_pipeline.definitions").defs
        settings = load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    from lms_activity_pipeline.defs.resources import resources_for

    return Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        sensors=defs.sensors,
        schedules=defs.schedules,
        resources={**resources_for(settings, env_vars=False), **(resources or {})},
        executor=defs.executor,
    )


class Pipeline:
    """A backend's definitions, a Dagster instance and warehouse access, for one test."""

    def __init__(
        self,
        backend: Backend,
        instance: DagsterInstance | None = None,
        resources: dict[str, Any] | None = None,
        **env: str,
    ) -> None:
        self.settings = settings_for(backend, **env)
        self.defs: Definitions = load_definitions(backend_env(backend, **env), resources)
        self.instance = instance or DagsterInstance.ephemeral()
        self._warehouse = Warehouse(backend.warehouse_url)

    @property
    def warehouse(self) -> Warehouse:
        """The backend's warehouse, its tables created on first use."""
        self._warehouse.migrate()
        return self._warehouse

    def ingest(self, first: str, last: str | None = None, **kw: Any) -> ExecuteInProcessResult:
        result = run_ingest(self.defs, self.instance, first, last, **kw)
        assert result.success
        return result

    def notify(self, **kw: Any) -> ExecuteInProcessResult:
        """One ``notify_mentors_job`` run (``kw``: event_types, retry_all_failed, op config fields)."""
        result = run_notify(self.defs, self.instance, **kw)
        assert result.success
        return result

    def log_rows(self) -> pd.DataFrame:
        """``lms_event_log`` joined with the event keys, ordered by event key and mentor."""
        log, events = wh.lms_event_log, wh.lms_activity_events
        stmt = (
            sa.select(log, events.c.event_key, events.c.event_type)
            .join_from(log, events, events.c.event_id == log.c.event_id)
            .order_by(events.c.event_key, log.c.mentor_id)
        )
        with self.warehouse.engine.connect() as conn:
            return pd.read_sql(stmt, conn)

    def events(self) -> pd.DataFrame:
        table = wh.lms_activity_events
        with self.warehouse.engine.connect() as conn:
            return pd.read_sql(sa.select(table).order_by(table.c.event_key), conn)

    def table(self, table: sa.Table, order_by: str | list[str]) -> pd.DataFrame:
        """Rows of a warehouse table through the typed reader the pipeline uses."""
        keys = [order_by] if isinstance(order_by, str) else order_by
        with self.warehouse.engine.connect() as conn:
            return db.read_typed(conn, sa.select(table).order_by(*[table.c[k] for k in keys]))

    def ai_ready(self) -> pd.DataFrame:
        """``ai_ready_events`` indexed by ``event_key``."""
        return self.table(wh.ai_ready_events, "event_id").set_index("event_key")

    def daily(self) -> pd.DataFrame:
        """``student_daily_activity`` indexed by ``(student_id, day as text)``."""
        frame = self.table(wh.student_daily_activity, ["student_id", "day"])
        return frame.assign(day=frame["day"].astype(str)).set_index(["student_id", "day"])

    def audit(self) -> ExecuteInProcessResult:
        """Run ``lms_quality_checks_job`` (every check, whole tables)."""
        job = self.defs.resolve_job_def(names.QUALITY_JOB)
        return job.execute_in_process(instance=self.instance, raise_on_error=False)

    def event_ids(self) -> dict[str, int]:
        events = self.events()
        return dict(zip(events["event_key"], events["event_id"].astype(int), strict=True))

    def count(self, table: sa.Table) -> int:
        with self.warehouse.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    def execute(self, stmt: sa.Executable) -> None:
        with self.warehouse.engine.begin() as conn:
            conn.execute(stmt)


def op_metadata(result: ExecuteInProcessResult, op: str = names.NOTIFY_OP) -> dict[str, Any]:
    """The output metadata values of ``op`` in ``result``."""
    for event in result.all_events:
        if event.event_type_value == "STEP_OUTPUT" and event.step_key == op:
            return {k: v.value for k, v in event.event_specific_data.metadata.items()}
    raise AssertionError(f"{op} produced no output")


def metadata(result: ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The metadata values of the last materialisation of ``asset`` in ``result``."""
    events = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    assert events, f"{asset} was not materialised"
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def checks(result: ExecuteInProcessResult) -> dict[str, AssetCheckEvaluation]:
    """The run's asset check evaluations by check name."""
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def like(column: sa.Column, **overrides: object) -> sa.Column:
    """A fresh column like ``column`` (name, type, key, nullability, uniqueness, server default)."""
    default = column.server_default.arg if column.server_default is not None else None
    kw = {
        "primary_key": column.primary_key,
        "nullable": column.nullable,
        "unique": column.unique,
        "server_default": default,
    }
    return sa.Column(column.name, column.type, **{**kw, **overrides})
