"""Idempotent creation and additive migration of the warehouse tables."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateSchema

from lms_activity_pipeline import db
from lms_activity_pipeline.warehouse.schema import METADATA


def migrate(engine: Engine, schema: str | None) -> list[str]:
    """Create the schema, missing tables, missing columns and missing indexes.

    Safe to run on every start: existing data is never touched. Returns what
    was changed, for logs. ``engine`` must carry the schema translation.
    """
    changes: list[str] = []
    # SQLite: BEGIN IMMEDIATE, so concurrent first starts (parallel steps) wait instead of racing.
    with db.write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql" and schema:
            # Serialise concurrent first starts (two runs creating the schema at once).
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('lms_activity_pipeline.migrate'))"))
            if not sa.inspect(conn).has_schema(schema):
                conn.execute(CreateSchema(schema, if_not_exists=True))
                changes.append(f"created schema {schema}")
        inspector = sa.inspect(conn)
        existing = set(inspector.get_table_names(schema=schema))
        for table in METADATA.sorted_tables:
            if table.name not in existing:
                table.create(conn)
                changes.append(f"created table {table.name}")
                continue
            have = {c["name"] for c in inspector.get_columns(table.name, schema=schema)}
            for column in table.columns:
                if column.name not in have:
                    _add_column(conn, table, column, schema)
                    changes.append(f"added column {table.name}.{column.name}")
            indexes = {i["name"] for i in inspector.get_indexes(table.name, schema=schema)}
            for index in table.indexes:
                if index.name not in indexes:
                    index.create(conn)
                    changes.append(f"created index {index.name}")
    return changes


def _add_column(conn: sa.Connection, table: sa.Table, column: sa.Column, schema: str | None) -> None:
    quote = conn.dialect.identifier_preparer.quote
    name = f"{quote(schema)}.{quote(table.name)}" if schema else quote(table.name)
    ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE {name} ADD COLUMN {ddl}"))
