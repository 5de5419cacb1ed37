"""The daily partitions of every asset: one partition per day in ``LMS_TIMEZONE``, from ``LMS_PARTITIONS_START``."""

from __future__ import annotations

from dagster import BackfillPolicy, DailyPartitionsDefinition

from lms_activity_pipeline.defs.settings import SETTINGS

#: Days up to and including today (activity lands live).
DAILY = DailyPartitionsDefinition(start_date=SETTINGS.partitions_start, timezone=SETTINGS.timezone, end_offset=1)

#: A multi-day backfill is one run over the whole range, not one run per day.
SINGLE_RUN = BackfillPolicy.single_run()
