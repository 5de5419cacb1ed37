"""Opening the warehouse: schema translation and first-use migration, without Dagster.

Shared by :class:`~lms_activity_pipeline.resources.warehouse.WarehouseResource`
(the pipeline) and :mod:`lms_activity_pipeline.api` (analysts and AI jobs), so
both resolve the Core tables to the same physical schema.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from lms_activity_pipeline import db
from lms_activity_pipeline.warehouse.migrate import migrate
from lms_activity_pipeline.warehouse.schema import SCHEMA_TOKEN


def physical_schema(engine: Engine, schema_name: str) -> str | None:
    """``schema_name`` on PostgreSQL, no schema on SQLite."""
    return schema_name if engine.dialect.name == "postgresql" else None


def is_translated(engine: Engine) -> bool:
    """Whether ``engine`` already maps the Core tables' placeholder schema."""
    return SCHEMA_TOKEN in (engine.get_execution_options().get("schema_translate_map") or {})


def translated(engine: Engine, schema_name: str) -> Engine:
    """``engine`` with the Core tables resolving to ``schema_name`` (PostgreSQL) or no schema (SQLite)."""
    return engine.execution_options(schema_translate_map={SCHEMA_TOKEN: physical_schema(engine, schema_name)})


def open_warehouse(url: str, schema_name: str, *, create: bool = True) -> Engine:
    """A translated engine for the warehouse at ``url``, checked and (with ``create``) migrated.

    An unreachable database is a one-line ``ConfigError`` naming ``LMS_WAREHOUSE_URL``.
    """
    engine = translated(db.create_engine(url, variable="LMS_WAREHOUSE_URL"), schema_name)
    db.check_connection(engine, "LMS_WAREHOUSE_URL")
    db.use_wal(engine)
    if create:
        migrate(engine, physical_schema(engine, schema_name))
    return engine
