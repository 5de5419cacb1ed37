"""The daily partitions of every asset (DESIGN.md §2): one partition per day in ``LMS_TIMEZONE``."""

from __future__ import annotations

from dagster import BackfillPolicy, DailyPartitionsDefinition

from lms_activity_pipeline.config import Settings


def daily_partitions(settings: Settings) -> DailyPartitionsDefinition:
    """Days from ``LMS_PARTITIONS_START`` up to and including today (activity lands live)."""
    return DailyPartitionsDefinition(start_date=settings.partitions_start, timezone=settings.timezone, end_offset=1)


#: A multi-day backfill is one run over the whole range, not one run per day.
SINGLE_RUN = BackfillPolicy.single_run()

#: The Dagster concurrency pool of every asset that writes the ingest and feature tables. Runs upsert
#: overlapping windows of the same tables, so the instance (``concurrency: pools:`` in dagster.yaml,
#: ``granularity: run``, ``default_limit: 1``) keeps any run holding this pool queued while another one
#: is in progress, whatever job it is: ``lms_ingest_job``, a UI materialisation or a backfill (``__ASSET_JOB``).
INGEST_POOL = "lms_ingest"
