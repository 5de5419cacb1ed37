"""Ingest assets: LMS attempts -> staged copies -> classified ``lms_activity_events``.

Daily-partitioned; a multi-day range is one run. With no config a run *recomputes* its partitions; the
sensor passes ``changed_since``/``changed_until`` for *incremental* runs that read only the changed
rows. Both upsert, so both end in the same table state. Every asset is in the ``lms_ingest`` pool: one
run that writes these tables at a time, however it was launched.
"""

import datetime as dt

from dagster import AssetExecutionContext, Config, MaterializeResult

from lms_activity_pipeline import names
from lms_activity_pipeline.defs import metadata as md
from lms_activity_pipeline.defs.partitions import ACTIVITY_FRESHNESS, table_asset
from lms_activity_pipeline.defs.resources import LMSResource, PipelineSettings, WarehouseResource
from lms_activity_pipeline.ingest import staging
from lms_activity_pipeline.ingest.events import classify_window
from lms_activity_pipeline.lms.queries import ExtractWindow
from lms_activity_pipeline.warehouse import schema as wh

#: A multi-day run works through its range this many days at a time (bounded memory).
DEFAULT_CHUNK_DAYS = 7


class IngestConfig(Config):
    """Incremental window (ISO-8601, set by the sensor). Empty: recompute the partitions."""

    changed_since: str | None = None
    changed_until: str | None = None
    chunk_days: int = DEFAULT_CHUNK_DAYS

    @property
    def is_incremental(self) -> bool:
        return self.changed_since is not None or self.changed_until is not None


def extract_window(context: AssetExecutionContext, config: IngestConfig) -> ExtractWindow:
    """The run's partition window (one day or a range) plus the incremental bounds."""
    window = context.partition_time_window

    def parse(value: str | None) -> dt.datetime | None:
        return None if value is None else dt.datetime.fromisoformat(value)

    return ExtractWindow(window.start, window.end, parse(config.changed_since), parse(config.changed_until))


def _stage(
    context: AssetExecutionContext,
    config: IngestConfig,
    lms: LMSResource,
    warehouse: WarehouseResource,
    source: staging.StagedSource,
) -> MaterializeResult:
    store = warehouse.store()
    report = staging.stage_attempts(
        lms.reader(), store, source, extract_window(context, config), config.chunk_days, progress=context.log.info
    )
    md.log_rejects(context, report.rejected)
    if report.future_rows:
        context.log.warning(
            f"{report.table}: {report.future_rows} rows have an updated_at after the LMS database's now() "
            f"({report.lms_now.isoformat()}): written by a server whose clock runs fast; stored as they are"
        )
    context.log.info(
        f"{report.table}: {report.extracted} LMS rows, {report.upserted.inserted} new, "
        f"{report.upserted.updated} changed, {len(report.rejected)} rejected"
    )
    md.add_partition_row_counts(context, store, source.table, "started_at")
    return MaterializeResult(metadata=md.stage_metadata(report, source.table, config.is_incremental))


@table_asset(names.RAW_EXAM_ATTEMPTS, "Staged copy of the LMS `Attempts` rows touching the partition's days.")
def raw_exam_attempts(
    context: AssetExecutionContext, config: IngestConfig, lms: LMSResource, warehouse: WarehouseResource
) -> MaterializeResult:
    return _stage(context, config, lms, warehouse, staging.EXAM_ATTEMPTS)


@table_asset(names.RAW_CONTENT_ATTEMPTS, "Staged copy of the LMS `ContentAttempts` rows touching the partition's days.")
def raw_content_attempts(
    context: AssetExecutionContext, config: IngestConfig, lms: LMSResource, warehouse: WarehouseResource
) -> MaterializeResult:
    return _stage(context, config, lms, warehouse, staging.CONTENT_ATTEMPTS)


@table_asset(
    names.LMS_ACTIVITY_EVENTS,
    "One row per classified activity event (see docs/ingestion.md), upserted by `event_key`; enqueues a "
    "pending notification per (young event, mentor) in `lms_event_log`.",
    deps=[raw_exam_attempts, raw_content_attempts],
    freshness_policy=ACTIVITY_FRESHNESS,
)
def lms_activity_events(
    context: AssetExecutionContext,
    config: IngestConfig,
    lms: LMSResource,
    warehouse: WarehouseResource,
    settings: PipelineSettings,
) -> MaterializeResult:
    store = warehouse.store()
    report = classify_window(
        lms.reader(),
        store,
        extract_window(context, config),
        chunk_days=config.chunk_days,
        event_types=settings.monitored_event_types,
        notify_max_age=dt.timedelta(hours=settings.notify_max_age_hours),
        now=dt.datetime.now(dt.UTC),
        progress=context.log.info,
    )
    md.log_rejects(context, report.rejected)
    md.log_rejects(context, report.left_out)
    context.log.info(
        f"lms_activity_events: {report.events} events ({report.upserted.inserted} new, {report.upserted.updated} "
        f"changed), {report.rows_rejected} rows rejected, {report.enqueued} mentor notifications enqueued"
    )
    md.add_partition_row_counts(context, store, wh.lms_activity_events, "timestamp")
    return MaterializeResult(metadata=md.events_metadata(report, wh.lms_activity_events, config.is_incremental))
