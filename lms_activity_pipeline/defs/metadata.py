"""Materialisation metadata that makes the Dagster UI useful: counts, windows, previews."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pandas as pd
import sqlalchemy as sa
from dagster import AssetExecutionContext, MetadataValue, TableColumn, TableColumnConstraints, TableSchema

from lms_activity_pipeline import names
from lms_activity_pipeline.domain.cleaning import kept
from lms_activity_pipeline.ingest.reports import EventsReport, FeaturesReport, StageReport
from lms_activity_pipeline.lms.queries import ExtractWindow
from lms_activity_pipeline.warehouse.dictionary import sql_type
from lms_activity_pipeline.warehouse.load import UpsertResult
from lms_activity_pipeline.warehouse.store import Warehouse

PREVIEW_ROWS = 10
REJECT_PREVIEW_ROWS = 20
#: Rejected rows logged one by one per step; the rest are counted.
MAX_LOGGED_REJECTS = 20


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
    """What the run wrote (each partition's ``dagster/row_count`` is set by :func:`add_partition_row_counts`)."""
    return {
        "rows_written": MetadataValue.int(result.total),
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


def add_partition_row_counts(context: AssetExecutionContext, store: Warehouse, table: sa.Table, column: str) -> None:
    """Give each partition the run materialised its own ``dagster/row_count``: the table's rows of that day
    (by ``column``, a time or a date, in the partitions' time zone), not the run's whole window."""
    partitions = context.assets_def.partitions_def
    window = context.partition_time_window
    timezone = getattr(partitions, "timezone", None) or "UTC"
    counts = store.rows_per_day(table, column, window.start, window.end, timezone)
    for key in context.partition_keys:
        context.add_asset_metadata({names.ROW_COUNT: MetadataValue.int(counts.get(key, 0))}, partition_key=key)


def log_rejects(context: AssetExecutionContext, rejected: pd.DataFrame) -> None:
    """One warning per rejected row (up to a limit) and a count of the rest."""
    if rejected.empty:
        return
    for row in rejected.head(MAX_LOGGED_REJECTS).itertuples(index=False):
        context.log.warning(f"skipped {row.source} row id={row.id}: {row.reason}")
    if len(rejected) > MAX_LOGGED_REJECTS:
        context.log.warning(f"... and {len(rejected) - MAX_LOGGED_REJECTS} more rejected rows")


def stage_metadata(report: StageReport, table: sa.Table, incremental: bool) -> dict[str, Any]:
    return {
        **window_metadata(report.window, incremental),
        "rows_extracted": MetadataValue.int(report.extracted),
        "rows_dated_in_future": MetadataValue.int(report.future_rows),
        **upsert_metadata(report.upserted),
        **rejects_metadata(report.rejected),
        **table_metadata(table),
        "preview": preview(report.preview),
    }


def events_metadata(report: EventsReport, table: sa.Table, incremental: bool) -> dict[str, Any]:
    return {
        **window_metadata(report.window, incremental),
        **upsert_metadata(report.upserted),
        "notifications_enqueued": MetadataValue.int(report.enqueued),
        "history_rows_unreadable": MetadataValue.int(len(report.left_out)),
        **counts_metadata(report.counts),
        **rejects_metadata(report.rejected),
        **table_metadata(table),
        "preview": preview(report.preview),
    }


def features_metadata(report: FeaturesReport, table: sa.Table) -> dict[str, Any]:
    meta: dict[str, Any] = {
        **window_metadata(report.window, incremental=False),
        **upsert_metadata(report.upserted),
        **table_metadata(table),
        "preview": preview(report.rows),
    }
    if table.name == names.AI_READY_EVENTS:
        meta.update(
            students=MetadataValue.int(report.students),
            lookback_events=MetadataValue.int(report.lookback_events),
            later_events_recomputed=MetadataValue.int(report.later_recomputed),
            later_events_changed=MetadataValue.int(report.later_changed),
        )
    return meta
