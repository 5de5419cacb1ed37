"""``notify_mentors_after_ingest``: a notify run after each successful run that materialised
``lms_activity_events`` (``lms_ingest_job``, or an asset run or backfill from the UI), when one is due."""

from dagster import (
    AssetKey,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    RunStatusSensorContext,
    SkipReason,
    run_status_sensor,
)

from lms_activity_pipeline import names
from lms_activity_pipeline.defs import runs
from lms_activity_pipeline.defs.notify.jobs import notify_mentors_job
from lms_activity_pipeline.defs.resources import PipelineSettings, WarehouseResource
from lms_activity_pipeline.defs.settings import SETTINGS

#: How often it looks for finished ingest runs (Dagster's default is 30 s).
INTERVAL_SECONDS = 5


def materialised_events(run: DagsterRun) -> bool:
    """Did ``run`` materialise ``lms_activity_events`` (and so enqueue notifications)?"""
    if run.asset_selection:
        return AssetKey(names.LMS_ACTIVITY_EVENTS) in run.asset_selection
    # No selection: the whole job ran (Dagster's implicit asset job holds every asset).
    return run.job_name in (names.INGEST_JOB, names.IMPLICIT_ASSET_JOB)


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    name=names.NOTIFY_AFTER_INGEST_SENSOR,
    request_job=notify_mentors_job,
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING if SETTINGS.notify_enabled else DefaultSensorStatus.STOPPED,
    description=(
        "After each successful run that materialised lms_activity_events (lms_ingest_job, UI materialisations "
        "and backfills), send the mentor notifications it enqueued (and whatever else is due)."
    ),
)
def notify_mentors_after_ingest(
    context: RunStatusSensorContext, warehouse: WarehouseResource, settings: PipelineSettings
) -> RunRequest | SkipReason:
    run = context.dagster_run
    if not materialised_events(run):
        return SkipReason(f"run {run.run_id} ({run.job_name}) did not materialise lms_activity_events")
    companion = runs.companion_covers(context.instance, run)
    if companion is not None:
        return SkipReason(f"after run {run.run_id}: its companion notify run {companion.run_id} sends what it enqueued")
    reason = settings.why_no_notify_run(warehouse.store().outbox())
    if reason:
        return SkipReason(f"after run {run.run_id}: {reason}")
    return runs.notify_request("ingest", after_run=run.run_id)
