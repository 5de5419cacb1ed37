"""The Dagster code location: ``dagster dev`` loads ``defs`` from here (see pyproject ``[tool.dagster]``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagster import Definitions

from lms_activity_pipeline.assets.bookkeeping import build_table_specs
from lms_activity_pipeline.assets.checks import build_checks
from lms_activity_pipeline.assets.features import build_feature_assets
from lms_activity_pipeline.assets.ingest import build_ingest_assets
from lms_activity_pipeline.config import Settings, load_settings
from lms_activity_pipeline.executors import build_executor
from lms_activity_pipeline.jobs import build_ingest_job, build_notify_job, build_quality_checks_job
from lms_activity_pipeline.partitions import daily_partitions
from lms_activity_pipeline.resources.factory import build_resources
from lms_activity_pipeline.schedules import build_notify_retry_schedule
from lms_activity_pipeline.sensors import build_lms_activity_sensor, build_notify_after_ingest_sensor


def build_definitions(settings: Settings, resources: Mapping[str, Any] | None = None) -> Definitions:
    """Everything the code location holds, for the given settings.

    ``resources`` replaces resources by key (e.g. a ``zulip`` resource with other
    timeouts); the rest come from the environment.
    """
    partitions_def = daily_partitions(settings)
    ingest_job, notify_job = build_ingest_job(), build_notify_job()
    return Definitions(
        assets=[*build_ingest_assets(partitions_def), *build_feature_assets(partitions_def), *build_table_specs()],
        asset_checks=build_checks(),
        jobs=[ingest_job, notify_job, build_quality_checks_job()],
        sensors=[build_lms_activity_sensor(settings), build_notify_after_ingest_sensor(settings, notify_job)],
        schedules=[build_notify_retry_schedule(settings, notify_job)],
        resources={**build_resources(settings), **(resources or {})},
        executor=build_executor(settings),
    )


defs = build_definitions(load_settings())
