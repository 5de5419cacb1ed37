"""Idempotent creation and additive migration of the warehouse tables."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.schema import CreateSchema

from lms_activity_pipeline import db
from lms_activity_pipeline.warehouse.schema import FILL_FROM, METADATA


def migrate(engine: Engine, schema: str | None) -> list[str]:
    """Create the schema, missing tables, missing columns and missing indexes.

    Safe to run on every start: existing data is never touched. It first looks
    without writing, so an up-to-date warehouse needs no write access (a
    read-only analyst account) and takes no lock. Returns what was changed, for
    logs. ``engine`` must carry the schema translation.
    """
    with engine.connect() as conn:
        if not _missing(conn, schema):
            return []
    changes: list[str] = []
    # SQLite: BEGIN IMMEDIATE, so concurrent first starts (parallel steps) wait instead of racing.
    with db.write_transaction(engine) as conn:
        if conn.dialect.name == "postgresql" and schema:
            # Serialise concurrent first starts (two runs creating the schema at once).
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('lms_activity_pipeline.migrate'))"))
            if not sa.inspect(conn).has_schema(schema):
                conn.execute(CreateSchema(schema, if_not_exists=True))
                changes.append(f"created schema {schema}")
        for table, item in _missing(conn, schema):
            if item is None:
                table.create(conn)
                changes.append(f"created table {table.name}")
            elif isinstance(item, sa.Column):
                _add_column(conn, table, item, schema)
                changes.append(f"added column {table.name}.{item.name}")
            else:
                item.create(conn)
                changes.append(f"created index {item.name}")
    return changes


#: A missing table (``None``), or a column or index missing from an existing table.
Missing = tuple[sa.Table, "sa.Column[Any] | sa.Index | None"]


def _missing(conn: sa.Connection, schema: str | None) -> list[Missing]:
    """What the database lacks; whole tables come first."""
    inspector = sa.inspect(conn)
    if conn.dialect.name == "postgresql" and schema and not inspector.has_schema(schema):
        return [(t, None) for t in METADATA.sorted_tables]
    existing = set(inspector.get_table_names(schema=schema))
    missing: list[Missing] = []
    for table in METADATA.sorted_tables:
        if table.name not in existing:
            missing.append((table, None))
            continue
        have = {c["name"] for c in inspector.get_columns(table.name, schema=schema)}
        missing += [(table, c) for c in table.columns if c.name not in have]
        indexes = {i["name"] for i in inspector.get_indexes(table.name, schema=schema)}
        missing += [(table, i) for i in table.indexes if i.name not in indexes]
    return missing


def _add_column(conn: sa.Connection, table: sa.Table, column: sa.Column[Any], schema: str | None) -> None:
    quote = conn.dialect.identifier_preparer.quote
    name = f"{quote(schema)}.{quote(table.name)}" if schema else quote(table.name)
    ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
    conn.execute(sa.text(f"ALTER TABLE {name} ADD COLUMN {ddl}"))
    if source := column.info.get(FILL_FROM):  # the rows already there get the value the column means for them
        conn.execute(sa.text(f"UPDATE {name} SET {quote(column.name)} = {quote(source)}"))
    if conn.dialect.name == "postgresql" and column.comment:  # as CREATE TABLE would have: \d+ shows it
        conn.execute(sa.text(f"COMMENT ON COLUMN {name}.{quote(column.name)} IS :comment"), {"comment": column.comment})
