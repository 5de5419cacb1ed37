"""Feature assets ``ai_ready_events`` and ``student_daily_activity``, from ``lms_activity_events``.

They read the warehouse, never the LMS, and always recompute their window (see ``ingest/features.py``).
"""

from dagster import AssetExecutionContext, MaterializeResult

from lms_activity_pipeline import names
from lms_activity_pipeline.defs import metadata as md
from lms_activity_pipeline.defs.partitions import ACTIVITY_FRESHNESS, DAILY, table_asset
from lms_activity_pipeline.defs.resources import WarehouseResource
from lms_activity_pipeline.ingest.features import compute_ai_ready_events, compute_daily_activity
from lms_activity_pipeline.warehouse import schema as wh


@table_asset(
    names.AI_READY_EVENTS,
    deps=[names.LMS_ACTIVITY_EVENTS],
    freshness_policy=ACTIVITY_FRESHNESS,
    description=(
        "One row per event with model-ready features (score, attempt number, prior failures, time since the "
        "previous event, events in the last 7 days, local hour and weekday). Looks back past the partition "
        "start, so features are right across partition boundaries; never looks ahead."
    ),
)
def ai_ready_events(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    window, store = context.partition_time_window, warehouse.store()
    report = compute_ai_ready_events(store, window.start, window.end, DAILY.timezone)
    context.log.info(
        f"ai_ready_events: {len(report.rows)} events of {report.students} students ({report.lookback_events} "
        f"look-back events), {report.upserted.inserted} new, {report.upserted.updated} changed; "
        f"{report.later_recomputed} later events of {report.stale_students} students recomputed "
        f"({report.later_changed} changed)"
    )
    md.add_partition_row_counts(context, store, wh.ai_ready_events, "timestamp")
    return MaterializeResult(metadata=md.features_metadata(report, wh.ai_ready_events))


@table_asset(
    names.STUDENT_DAILY_ACTIVITY,
    deps=[names.LMS_ACTIVITY_EVENTS],
    freshness_policy=ACTIVITY_FRESHNESS,
    description=(
        "One row per (student, day in LMS_TIMEZONE): events per type, exams passed/failed, mean score, "
        "content minutes, first and last event time."
    ),
)
def student_daily_activity(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
    window, store = context.partition_time_window, warehouse.store()
    report = compute_daily_activity(store, window.start, window.end, DAILY.timezone)
    context.log.info(
        f"student_daily_activity: {len(report.rows)} student-days, {report.upserted.inserted} new, "
        f"{report.upserted.updated} changed"
    )
    md.add_partition_row_counts(context, store, wh.student_daily_activity, "day")
    return MaterializeResult(metadata=md.features_metadata(report, wh.student_daily_activity))
