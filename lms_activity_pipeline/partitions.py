"""The daily partitions of every asset (DESIGN.md §2): one partition per day in ``LMS_TIMEZONE``."""

from __future__ import annotations

from dagster import BackfillPolicy, DailyPartitionsDefinition

from lms_activity_pipeline.config import Settings


def daily_partitions(settings: Settings) -> DailyPartitionsDefinition:
    """Days from ``LMS_PARTITIONS_START`` up to and including today (activity lands live)."""
    return DailyPartitionsDefinition(start_date=settings.partitions_start, timezone=settings.timezone, end_offset=1)


#: A multi-day backfill is one run over the whole range, not one run per day.
SINGLE_RUN = BackfillPolicy.single_run()
