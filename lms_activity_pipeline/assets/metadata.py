"""Materialisation metadata that makes the Dagster UI useful: counts, windows, previews."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pandas as pd
import sqlalchemy as sa
from dagster import MetadataValue, TableColumn, TableColumnConstraints, TableSchema

from lms_activity_pipeline.domain.cleaning import kept
from lms_activity_pipeline.lms.queries import ExtractWindow
from lms_activity_pipeline.warehouse.dictionary import sql_type
from lms_activity_pipeline.warehouse.load import UpsertResult

PREVIEW_ROWS = 10
REJECT_PREVIEW_ROWS = 20


def _fmt(value: dt.datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="minutes")


def window_metadata(window: ExtractWindow, incremental: bool) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "partition_window": MetadataValue.text(f"{_fmt(window.start)} -> {_fmt(window.end)}"),
        "mode": MetadataValue.text("incremental" if incremental else "recompute"),
    }
    if incremental:
        meta["changed_window"] = MetadataValue.text(f"({_fmt(window.changed_since)}, {_fmt(window.changed_until)}]")
    return meta


def upsert_metadata(result: UpsertResult) -> dict[str, Any]:
    return {
        "dagster/row_count": MetadataValue.int(result.total),
        "rows_inserted": MetadataValue.int(result.inserted),
        "rows_updated": MetadataValue.int(result.updated),
        "rows_unchanged": MetadataValue.int(result.unchanged),
        "rows_deleted": MetadataValue.int(result.deleted),
    }


def preview(frame: pd.DataFrame, columns: list[str] | None = None, rows: int = PREVIEW_ROWS) -> MetadataValue:
    """The first ``rows`` rows as a markdown table."""
    if frame.empty:
        return MetadataValue.md("_no rows_")
    shown = frame[columns] if columns else frame
    return MetadataValue.md(shown.head(rows).to_markdown(index=False))


def rejects_metadata(rejected: pd.DataFrame) -> dict[str, Any]:
    """``rows_rejected`` (not stored), ``rows_kept_with_notes`` (stored with a value ignored or replaced)
    and a preview of both."""
    notes = int(kept(rejected).sum())
    meta: dict[str, Any] = {
        "rows_rejected": MetadataValue.int(len(rejected) - notes),
        "rows_kept_with_notes": MetadataValue.int(notes),
    }
    if not rejected.empty:
        meta["rejected_preview"] = preview(rejected, rows=REJECT_PREVIEW_ROWS)
    return meta


def counts_metadata(counts: Mapping[str, int]) -> dict[str, Any]:
    """Per-type counts, as numbers (plotted across runs) and as one table."""
    meta: dict[str, Any] = {f"events_{name}": MetadataValue.int(n) for name, n in counts.items()}
    table = pd.DataFrame({"event_type": list(counts), "events": list(counts.values())})
    meta["events_by_type"] = MetadataValue.md(table.to_markdown(index=False))
    return meta


def column_schema(table: sa.Table) -> TableSchema:
    """The table's columns as Dagster sees them: name, PostgreSQL type, comment, constraints."""
    key = [c.name for c in table.primary_key.columns]
    composite = [f"primary key ({', '.join(key)})"] if len(key) > 1 else []
    return TableSchema(
        columns=[
            TableColumn(
                name=column.name,
                type=sql_type(column),
                description=column.comment,
                constraints=TableColumnConstraints(
                    nullable=bool(column.nullable) and not column.primary_key,
                    unique=bool(column.unique) or (column.primary_key and len(key) == 1),
                    other=composite if column.primary_key else [],
                ),
            )
            for column in table.columns
        ]
    )


def table_metadata(table: sa.Table) -> dict[str, Any]:
    """Definition and materialisation metadata describing ``table`` (``dagster/column_schema``)."""
    return {"dagster/column_schema": column_schema(table), "table": MetadataValue.text(table.name)}
