"""Feature assets: ``ai_ready_events`` and ``student_daily_activity`` from ``lms_activity_events``.

They read the warehouse, never the LMS, and always recompute their partition
window (a run of the sensor or a backfill alike): the window's rows become
exactly what the current events say, so reprocessing is idempotent.
"""

import datetime as dt
from zoneinfo import ZoneInfo

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionsDefinition,
    asset,
)

from lms_activity_pipeline.assets import metadata as md
from lms_activity_pipeline.assets.ingest import GROUP
from lms_activity_pipeline.domain import features as feat
from lms_activity_pipeline.lms.queries import ExtractWindow
from lms_activity_pipeline.partitions import INGEST_POOL, SINGLE_RUN
from lms_activity_pipeline.resources.warehouse import WarehouseResource
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.features import FAR_FUTURE, STUDENT_CHUNK
from lms_activity_pipeline.warehouse.load import UpsertResult

EVENTS_ASSET = "lms_activity_events"
PREVIEW_COLUMNS = [
    "event_key", "event_type", "timestamp", "attempt_number", "prior_failures", "score_pct",
    "seconds_since_prev_event", "student_events_7d",
]


def refresh_later_events(
    warehouse: WarehouseResource, after: dt.datetime, students: set[int], timezone: str
) -> tuple[int, UpsertResult]:
    """Recompute the features of ``students``' events from ``after`` on (their history changed)."""
    ordered, total, written = sorted(students), 0, UpsertResult(0, 0, 0)
    for i in range(0, len(ordered), STUDENT_CHUNK):
        events, history = warehouse.feature_inputs(after, FAR_FUTURE, ordered[i : i + STUDENT_CHUNK])
        later = feat.event_features(events, history, timezone)
        written += warehouse.write_ai_ready_events(later, after, FAR_FUTURE, whole_window=False)
        total += len(later)
    return total, written


def build_feature_assets(partitions_def: TimeWindowPartitionsDefinition) -> list[AssetsDefinition]:
    """The two feature assets on ``partitions_def`` (whose time zone sets local hours and days)."""
    timezone = partitions_def.timezone

    @asset(
        partitions_def=partitions_def,
        backfill_policy=SINGLE_RUN,
        pool=INGEST_POOL,
        group_name=GROUP,
        kinds={"sql", "pandas"},
        deps=[EVENTS_ASSET],
        metadata=md.table_metadata(wh.ai_ready_events),
        description=(
            "One row per event with model-ready features (score, attempt number, prior failures, time since the "
            "previous event, events in the last 7 days, local hour and weekday). Looks back past the partition "
            "start, so features are right across partition boundaries; never looks ahead."
        ),
    )
    def ai_ready_events(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
        window = context.partition_time_window
        stored = warehouse.stored_timeline(window.start, window.end)
        events, history = warehouse.feature_inputs(window.start, window.end)
        features = feat.event_features(events, history, timezone)
        result = warehouse.write_ai_ready_events(features, window.start, window.end)
        # Later days were computed from the window as it was: where it changed, bring them up to date.
        stale = set() if stored is None else feat.students_with_new_timelines(stored, features)
        refreshed, later = refresh_later_events(warehouse, window.end, stale, timezone) if stale else (0, UpsertResult(0, 0, 0))
        context.log.info(
            f"ai_ready_events: {len(features)} events of {events['student_id'].nunique()} students "
            f"({len(history.recent)} look-back events), {result.inserted} new, {result.updated} changed; "
            f"{refreshed} later events of {len(stale)} students recomputed ({later.updated} changed)"
        )
        return MaterializeResult(
            metadata={
                **md.window_metadata(ExtractWindow(window.start, window.end), incremental=False),
                **md.upsert_metadata(result),
                **md.table_metadata(wh.ai_ready_events),
                "students": MetadataValue.int(int(events["student_id"].nunique())),
                "lookback_events": MetadataValue.int(len(history.recent)),
                "later_events_recomputed": MetadataValue.int(refreshed),
                "later_events_changed": MetadataValue.int(later.updated),
                "preview": md.preview(features, PREVIEW_COLUMNS),
            }
        )

    @asset(
        partitions_def=partitions_def,
        backfill_policy=SINGLE_RUN,
        pool=INGEST_POOL,
        group_name=GROUP,
        kinds={"sql", "pandas"},
        deps=[EVENTS_ASSET],
        metadata=md.table_metadata(wh.student_daily_activity),
        description=(
            "One row per (student, day in LMS_TIMEZONE): events per type, exams passed/failed, mean score, "
            "content minutes, first and last event time."
        ),
    )
    def student_daily_activity(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
        window = context.partition_time_window
        zone = ZoneInfo(timezone)
        first_day, end_day = window.start.astimezone(zone).date(), window.end.astimezone(zone).date()
        events = warehouse.window_events(window.start, window.end)
        daily = feat.daily_activity(events, timezone)
        result = warehouse.write_daily_activity(daily, first_day, end_day)
        context.log.info(f"student_daily_activity: {len(daily)} student-days, {result.inserted} new, {result.updated} changed")
        return MaterializeResult(
            metadata={
                **md.window_metadata(ExtractWindow(window.start, window.end), incremental=False),
                **md.upsert_metadata(result),
                **md.table_metadata(wh.student_daily_activity),
                "preview": md.preview(daily, ["student_id", "day", "events_total", "exams_passed", "exams_failed", "mean_score_pct", "content_minutes"]),
            }
        )

    return [ai_ready_events, student_daily_activity]
