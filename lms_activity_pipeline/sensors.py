"""Sensors: ``lms_activity_sensor`` polls the LMS and requests incremental ingest runs;
``notify_mentors_after_ingest`` launches ``notify_mentors_job`` after each successful ingest run."""

import datetime as dt

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    RunStatusSensorContext,
    RunStatusSensorDefinition,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    run_status_sensor,
    sensor,
)
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

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


def build_notify_after_ingest_sensor(
    settings: Settings, ingest_job: UnresolvedAssetJobDefinition, notify_job: JobDefinition
) -> RunStatusSensorDefinition:
    """Runs ``notify_mentors_job`` after every successful ``lms_ingest_job`` run (on when notifications are)."""

    @run_status_sensor(
        run_status=DagsterRunStatus.SUCCESS,
        name=NOTIFY_SENSOR_NAME,
        monitored_jobs=[ingest_job],
        request_job=notify_job,
        default_status=DefaultSensorStatus.RUNNING if settings.notify_enabled else DefaultSensorStatus.STOPPED,
        description="After each successful lms_ingest_job run, send the mentor notifications it enqueued.",
    )
    def notify_mentors_after_ingest(context: RunStatusSensorContext) -> RunRequest:
        return notify_request_after(context.dagster_run.run_id)

    return notify_mentors_after_ingest
