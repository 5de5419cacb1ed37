"""Ingest assets: LMS attempts -> staged copies -> classified ``lms_activity_events``.

Every asset is daily-partitioned and runs multi-day ranges as one run. With
no config a run *recomputes* its partitions; the sensor passes
``changed_since``/``changed_until`` for *incremental* runs that read only the
changed rows. Both upsert, so both end in the same table state.
"""


import datetime as dt
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    Config,
    MaterializeResult,
    PartitionsDefinition,
    asset,
)

from lms_activity_pipeline.assets import metadata as md
from lms_activity_pipeline.domain import classification as cls
from lms_activity_pipeline.domain import cleaning
from lms_activity_pipeline.domain.mentor_pairs import notification_pairs
from lms_activity_pipeline.lms.queries import ExtractWindow
from lms_activity_pipeline.partitions import INGEST_POOL, SINGLE_RUN
from lms_activity_pipeline.resources.lms import LMSResource
from lms_activity_pipeline.resources.settings import PipelineSettings
from lms_activity_pipeline.resources.warehouse import WarehouseResource
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.load import UpsertResult

GROUP = "lms_activity"
MAX_LOGGED_REJECTS = 20


#: A multi-day run works through its range this many days at a time (bounded memory).
DEFAULT_CHUNK_DAYS = 7


class IngestConfig(Config):
    """Incremental window (ISO-8601, set by the sensor). Empty: recompute the partitions."""

    changed_since: str | None = None
    changed_until: str | None = None
    chunk_days: int = DEFAULT_CHUNK_DAYS


def extract_window(context: AssetExecutionContext, config: IngestConfig) -> ExtractWindow:
    """The run's partition window (one day or a range) plus the incremental bounds."""
    window = context.partition_time_window

    def parse(value: str | None) -> dt.datetime | None:
        return None if value is None else dt.datetime.fromisoformat(value)

    return ExtractWindow(
        start=window.start,
        end=window.end,
        changed_since=parse(config.changed_since),
        changed_until=parse(config.changed_until),
    )


def _is_incremental(config: IngestConfig) -> bool:
    return config.changed_since is not None or config.changed_until is not None


def log_rejects(context: AssetExecutionContext, rejected: pd.DataFrame) -> None:
    """One warning per rejected row (up to a limit) and a summary line."""
    if rejected.empty:
        return
    for row in rejected.head(MAX_LOGGED_REJECTS).itertuples(index=False):
        context.log.warning(f"skipped {row.source} row id={row.id}: {row.reason}")
    if len(rejected) > MAX_LOGGED_REJECTS:
        context.log.warning(f"... and {len(rejected) - MAX_LOGGED_REJECTS} more rejected rows")


class AttemptNumbers:
    """Attempt numbers from the LMS's earlier exam attempts, and the rows left out because a value
    (``started_at = '-infinity'``, a BC date) cannot be read: logged and counted, never dropped unseen."""

    def __init__(self, lms: LMSResource) -> None:
        self.lms = lms
        self.left_out: list[pd.DataFrame] = [cleaning.empty_rejects()]

    def __call__(self, student_ids: set[int] | None, until: dt.datetime | None) -> pd.Series:
        history, unreadable = self.lms.exam_attempt_history(student_ids, until)
        self.left_out.append(unreadable)
        return cls.attempt_numbers(history)

    def unreadable(self) -> pd.DataFrame:
        rows = pd.concat(self.left_out, ignore_index=True).drop_duplicates(["source", "id", "reason"])
        return rows.assign(reason=rows["reason"] + " (left out of attempt numbers)")


@dataclass(frozen=True)
class ClassifiedPiece:
    """One piece of the window: its events, the rows rejected, and the staged versions it processed."""

    events: pd.DataFrame
    rejected: pd.DataFrame
    #: Per staged table, ``id, updated_at, reason`` of every row read (reason NULL: accepted).
    versions: dict[sa.Table, pd.DataFrame]


def classify_piece(
    numbering: AttemptNumbers,
    warehouse: WarehouseResource,
    dims: cls.Dimensions,
    piece: ExtractWindow,
    numbers: pd.Series | None,
) -> ClassifiedPiece:
    """Events of one piece of the window from the staged attempts, the rows rejected, the versions read."""
    staged_exams = warehouse.attempts_in_window(wh.raw_exam_attempts, piece)
    staged_contents = warehouse.attempts_in_window(wh.raw_content_attempts, piece)
    exams, bad_exams = cleaning.clean_exam_attempts(staged_exams)
    contents, bad_contents = cleaning.clean_content_attempts(staged_contents)
    if numbers is None and not exams.empty:
        numbers = numbering(set(exams["user_id"].tolist()), piece.end)
    exam_events, bad_exam_refs = cls.classify_exam_attempts(exams, dims, numbers)
    content_events, bad_content_refs = cls.classify_content_attempts(contents, dims)
    events = pd.concat([exam_events, content_events], ignore_index=True)
    rejected = pd.concat([bad_exams, bad_contents, bad_exam_refs, bad_content_refs], ignore_index=True)
    versions = {
        wh.raw_exam_attempts: cleaning.processed_versions("Attempts", staged_exams, rejected),
        wh.raw_content_attempts: cleaning.processed_versions("ContentAttempts", staged_contents, rejected),
    }
    return ClassifiedPiece(cls.in_window(events, piece.start, piece.end), rejected, versions)


def build_ingest_assets(partitions_def: PartitionsDefinition) -> list[AssetsDefinition]:
    """The three ingest assets on ``partitions_def``."""

    def stage_raw(
        context: AssetExecutionContext,
        config: IngestConfig,
        lms: LMSResource,
        warehouse: WarehouseResource,
        table,  # noqa: ANN001 - a warehouse Table
        extract,  # noqa: ANN001 - ExtractWindow -> raw LMS rows
        clean_fn,  # noqa: ANN001 - cleaning function
    ) -> MaterializeResult:
        window = extract_window(context, config)
        result, extracted, rejects, first, future = UpsertResult(0, 0, 0), 0, [], None, 0
        lms_now = pd.Timestamp(lms.database_now())
        for piece in window.chunks(config.chunk_days):
            raw = extract(piece)
            clean, rejected = clean_fn(raw)
            result += warehouse.upsert(table, clean, key="id", touch="_extracted_at")
            extracted += len(raw)
            future += int((clean["updated_at"] > lms_now).sum())
            rejects.append(rejected)
            first = clean if first is None or first.empty else first
        rejected = pd.concat(rejects, ignore_index=True).drop_duplicates(["source", "id", "reason"])
        log_rejects(context, rejected)
        if future:
            context.log.warning(
                f"{table.name}: {future} rows have an updated_at after the LMS database's now() ({lms_now.isoformat()}): "
                "written by a server whose clock runs fast; stored as they are"
            )
        context.log.info(
            f"{table.name}: {extracted} LMS rows, {result.inserted} new, {result.updated} changed, "
            f"{len(rejected)} rejected"
        )
        return MaterializeResult(
            metadata={
                **md.window_metadata(window, _is_incremental(config)),
                "rows_extracted": extracted,
                "rows_dated_in_future": future,
                **md.upsert_metadata(result),
                **md.rejects_metadata(rejected),
                **md.table_metadata(table),
                "preview": md.preview(first if first is not None else pd.DataFrame()),
            }
        )

    @asset(
        partitions_def=partitions_def,
        backfill_policy=SINGLE_RUN,
        pool=INGEST_POOL,
        group_name=GROUP,
        kinds={"sql", "pandas"},
        metadata=md.table_metadata(wh.raw_exam_attempts),
        description="Staged copy of the LMS `Attempts` rows touching the partition's days.",
    )
    def raw_exam_attempts(
        context: AssetExecutionContext, config: IngestConfig, lms: LMSResource, warehouse: WarehouseResource
    ) -> MaterializeResult:
        return stage_raw(context, config, lms, warehouse, wh.raw_exam_attempts, lms.exam_attempts, cleaning.clean_exam_attempts)

    @asset(
        partitions_def=partitions_def,
        backfill_policy=SINGLE_RUN,
        pool=INGEST_POOL,
        group_name=GROUP,
        kinds={"sql", "pandas"},
        metadata=md.table_metadata(wh.raw_content_attempts),
        description="Staged copy of the LMS `ContentAttempts` rows touching the partition's days.",
    )
    def raw_content_attempts(
        context: AssetExecutionContext, config: IngestConfig, lms: LMSResource, warehouse: WarehouseResource
    ) -> MaterializeResult:
        return stage_raw(
            context, config, lms, warehouse, wh.raw_content_attempts, lms.content_attempts, cleaning.clean_content_attempts
        )

    @asset(
        partitions_def=partitions_def,
        backfill_policy=SINGLE_RUN,
        pool=INGEST_POOL,
        group_name=GROUP,
        kinds={"sql", "pandas"},
        deps=[raw_exam_attempts, raw_content_attempts],
        metadata=md.table_metadata(wh.lms_activity_events),
        description="One row per classified activity event (DESIGN.md §4), upserted by `event_key`.",
    )
    def lms_activity_events(
        context: AssetExecutionContext,
        config: IngestConfig,
        lms: LMSResource,
        warehouse: WarehouseResource,
        settings: PipelineSettings,
    ) -> MaterializeResult:
        window = extract_window(context, config)
        pieces = window.chunks(config.chunk_days)
        dims, bad_dims = lms.dimensions()
        numbering = AttemptNumbers(lms)
        # Attempt numbers need every earlier attempt: read once for a multi-piece range.
        numbers = numbering(None, window.end) if len(pieces) > 1 else None
        result, enqueued, counts = UpsertResult(0, 0, 0), 0, cls.counts_by_type(cls.empty_events())
        rejects, shown = [bad_dims], cls.empty_events()
        for piece in pieces:
            classified = classify_piece(numbering, warehouse, dims, piece, numbers)
            events, rejected = cls.of_types(classified.events, settings.monitored_event_types), classified.rejected
            result += warehouse.upsert_events(events)
            pairs = notification_pairs(
                events,
                dims.assignments,
                now=dt.datetime.now(dt.UTC),
                max_age=dt.timedelta(hours=settings.notify_max_age_hours),
            )
            enqueued += warehouse.outbox().enqueue(pairs)
            # Stored and enqueued: only now are the staged versions in lms_activity_events (or refused, and why).
            for table, versions in classified.versions.items():
                warehouse.mark_classified(table, versions)
            counts = {k: counts[k] + v for k, v in cls.counts_by_type(events).items()}
            rejects.append(rejected)
            shown = events if shown.empty else shown
        rejected = pd.concat(rejects, ignore_index=True).drop_duplicates(["source", "id", "reason"])
        log_rejects(context, rejected)
        left_out = numbering.unreadable()
        log_rejects(context, left_out)
        context.log.info(
            f"lms_activity_events: {sum(counts.values())} events ({result.inserted} new, {result.updated} changed), "
            f"{int((~cleaning.kept(rejected)).sum())} rows rejected, {enqueued} mentor notifications enqueued"
        )
        return MaterializeResult(
            metadata={
                **md.window_metadata(window, _is_incremental(config)),
                **md.upsert_metadata(result),
                "notifications_enqueued": enqueued,
                "history_rows_unreadable": len(left_out),
                **md.counts_metadata(counts),
                **md.rejects_metadata(rejected),
                **md.table_metadata(wh.lms_activity_events),
                "preview": md.preview(
                    shown.sort_values("timestamp"),
                    ["event_key", "event_type", "student_username", "activity_title", "mentor_username", "timestamp"],
                ),
            }
        )

    return [raw_exam_attempts, raw_content_attempts, lms_activity_events]
