"""The daily partitions of every asset: one partition per day in ``LMS_TIMEZONE``, from ``LMS_PARTITIONS_START``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from dagster import (
    AssetsDefinition,
    BackfillPolicy,
    DailyPartitionsDefinition,
    FreshnessPolicy,
    MaterializeResult,
    asset,
)

from lms_activity_pipeline import names
from lms_activity_pipeline.defs.metadata import table_metadata
from lms_activity_pipeline.defs.settings import SETTINGS
from lms_activity_pipeline.warehouse.schema import table_named

#: Days up to and including today (activity lands live).
DAILY = DailyPartitionsDefinition(start_date=SETTINGS.partitions_start, timezone=SETTINGS.timezone, end_offset=1)

#: A multi-day backfill is one run over the whole range, not one run per day.
SINGLE_RUN = BackfillPolicy.single_run()

#: The event and feature tables are re-materialised whenever the LMS changes (the sensor polls every
#: minute): the UI shows them WARN after 6 hours without a materialisation and FAIL after a day (a quiet
#: LMS, or ingestion stuck: the lag alert tells which).
ACTIVITY_FRESHNESS = FreshnessPolicy.time_window(fail_window=dt.timedelta(days=1), warn_window=dt.timedelta(hours=6))


def table_asset(
    table: str,
    description: str,
    deps: Sequence[AssetsDefinition | str] = (),
    freshness_policy: FreshnessPolicy | None = None,
) -> Callable[[Callable[..., MaterializeResult]], AssetsDefinition]:
    """The decorator every asset of the ``lms_activity`` group shares: the warehouse table it writes (its
    name and columns), daily partitions, single-run backfills and the ``lms_ingest`` pool (one run that
    writes these tables at a time, however it was launched)."""
    return asset(
        name=table,
        partitions_def=DAILY,
        backfill_policy=SINGLE_RUN,
        pool=names.INGEST_POOL,
        group_name=names.ACTIVITY_GROUP,
        kinds={"sql", "pandas"},
        metadata=table_metadata(table_named(table)),
        description=description,
        deps=list(deps),
        freshness_policy=freshness_policy,
    )
