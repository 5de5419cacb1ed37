"""Sensors: ``lms_activity_sensor`` polls the LMS and requests incremental ingest runs;
``notify_mentors_after_ingest`` launches ``notify_mentors_job`` after each successful run that
materialised ``lms_activity_events`` (``lms_ingest_job``, or an asset run or backfill from the UI)."""

import datetime as dt

from dagster import (
    AssetKey,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    RunStatusSensorContext,
    RunStatusSensorDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_status_sensor,
    sensor,
)
from lms_activity_pipeline.config import Settings
from lms_activity_pipeline.jobs import INGEST_JOB_NAME
from lms_activity_pipeline.monitoring.poll import Cursor, PollPlan, plan_poll
from lms_activity_pipeline.resources.lms import LMSResource
from lms_activity_pipeline.resources.settings import PipelineSettings
from lms_activity_pipeline.runner import ingest_run_config, partition_range_tags

SENSOR_NAME = "lms_activity_sensor"
NOTIFY_SENSOR_NAME = "notify_mentors_after_ingest"
TRIGGER_TAG = "lms/trigger"


def run_request_for(plan: PollPlan, trigger: str = "sensor") -> RunRequest:
    """The ``lms_ingest_job`` run that covers ``plan``: one run, however many days."""
    tags = {TRIGGER_TAG: trigger, "lms/changed_rows": str(plan.rows)}
    partition_key = None
    if plan.first_partition == plan.last_partition:
        partition_key = plan.first_partition
    else:
        tags.update(partition_range_tags(plan.first_partition, plan.last_partition))
    return RunRequest(
        run_key=plan.run_key,
        job_name=INGEST_JOB_NAME,
        run_config=ingest_run_config(plan.changed_since, plan.changed_until),
        partition_key=partition_key,
        tags=tags,
    )


def build_lms_activity_sensor(settings: Settings) -> SensorDefinition:
    """The sensor, ticking every ``LMS_ACTIVITY_POLL_INTERVAL`` seconds, running when monitoring is enabled."""
    timezone, partitions_start = settings.timezone, settings.partitions_start

    @sensor(
        name=SENSOR_NAME,
        job_name=INGEST_JOB_NAME,
        minimum_interval_seconds=settings.poll_interval,
        default_status=DefaultSensorStatus.RUNNING if settings.monitor_enabled else DefaultSensorStatus.STOPPED,
        description=(
            "Polls the LMS updated_at high-water marks (with a lookback for late commits) and requests one "
            "incremental lms_ingest_job run for the days the changed rows touch."
        ),
    )
    def lms_activity_sensor(context: SensorEvaluationContext, lms: LMSResource, settings: PipelineSettings) -> SensorResult:
        result = plan_poll(
            lms,
            Cursor.from_json(context.cursor),
            timezone=timezone,
            partitions_start=partitions_start,
            lookback=dt.timedelta(seconds=settings.lookback_seconds),
        )
        if result.plan is None:
            return SensorResult(skip_reason=result.skip_reason, cursor=result.cursor.to_json())
        context.log.info(result.plan.describe())
        return SensorResult(run_requests=[run_request_for(result.plan)], cursor=result.cursor.to_json())

    return lms_activity_sensor


def notify_request_after(ingest_run_id: str) -> RunRequest:
    """The notification run that follows one ingest run (its run key makes it one per ingest run)."""
    return RunRequest(
        run_key=f"notify-after-{ingest_run_id}",
        tags={TRIGGER_TAG: "ingest", "lms/ingest_run_id": ingest_run_id},
    )


EVENTS_ASSET = AssetKey("lms_activity_events")
#: The job Dagster runs for materialisations and backfills launched from the asset pages.
IMPLICIT_ASSET_JOB_NAME = "__ASSET_JOB"


def materialised_events(run: DagsterRun) -> bool:
    """Did ``run`` materialise ``lms_activity_events`` (and so enqueue notifications)?"""
    if run.asset_selection:
        return EVENTS_ASSET in run.asset_selection
    # No selection: the whole job ran (Dagster's implicit asset job holds every asset).
    return run.job_name in (INGEST_JOB_NAME, IMPLICIT_ASSET_JOB_NAME)


def build_notify_after_ingest_sensor(settings: Settings, notify_job: JobDefinition) -> RunStatusSensorDefinition:
    """Runs ``notify_mentors_job`` after every successful run that materialised ``lms_activity_events``.

    It watches every job of the code location, not only ``lms_ingest_job``: assets
    materialised and backfilled from the UI run in Dagster's implicit asset job.
    """

    @run_status_sensor(
        run_status=DagsterRunStatus.SUCCESS,
        name=NOTIFY_SENSOR_NAME,
        request_job=notify_job,
        default_status=DefaultSensorStatus.RUNNING if settings.notify_enabled else DefaultSensorStatus.STOPPED,
        description=(
            "After each successful run that materialised lms_activity_events (lms_ingest_job, UI materialisations "
            "and backfills), send the mentor notifications it enqueued."
        ),
    )
    def notify_mentors_after_ingest(context: RunStatusSensorContext) -> RunRequest | SkipReason:
        run = context.dagster_run
        if not materialised_events(run):
            return SkipReason(f"run {run.run_id} ({run.job_name}) did not materialise lms_activity_events")
        return notify_request_after(run.run_id)

    return notify_mentors_after_ingest
