"""Sensors: ``lms_activity_sensor`` polls the LMS and requests incremental ingest runs;
``notify_mentors_after_ingest`` launches ``notify_mentors_job`` after each successful run that
materialised ``lms_activity_events`` (``lms_ingest_job``, or an asset run or backfill from the UI),
when the outbox has something due."""

import datetime as dt
import json

from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    JobDefinition,
    RunRequest,
    RunsFilter,
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
from lms_activity_pipeline.monitoring.followup import PendingRun, RunState, review
from lms_activity_pipeline.monitoring.poll import Cursor, PollPlan, plan_poll
from lms_activity_pipeline.ops.notify import why_no_run
from lms_activity_pipeline.resources.lms import LMSResource
from lms_activity_pipeline.resources.settings import PipelineSettings
from lms_activity_pipeline.resources.warehouse import WarehouseResource
from lms_activity_pipeline.runner import ingest_run_config, partition_range_tags

SENSOR_NAME = "lms_activity_sensor"
NOTIFY_SENSOR_NAME = "notify_mentors_after_ingest"
TRIGGER_TAG = "lms/trigger"
#: Where the sensor's cursor keeps the runs it requested and follows (see ``monitoring/followup.py``).
PENDING_KEY = "_pending"
#: An incremental run covers minutes of changes and takes seconds; one still going after this long is
#: hung, and would hold the single slot of the lms_ingest pool (and so the live monitoring) forever.
#: Run monitoring (deploy/dagster.yaml) terminates it; the sensor then requests the window again.
INCREMENTAL_RUN_MAX_RUNTIME_SECONDS = 3600
#: How often notify_mentors_after_ingest looks for finished ingest runs (Dagster's default is 30 s).
NOTIFY_SENSOR_INTERVAL_SECONDS = 5


#: Run config that runs every step inside the run's own process. Dagster's default executor starts a
#: process per step (2-3 s each here, ~25 s for the ingest job's chain of steps, against ~2 s of work
#: in an incremental run), so incremental runs skip it; history runs keep the configured executor.
IN_PROCESS_CONFIG = {"execution": {"config": {"in_process": {}}}}


def run_request_for(plan: PollPlan | PendingRun, trigger: str = "sensor", *, in_process: bool = False) -> RunRequest:
    """The ``lms_ingest_job`` run that covers ``plan``: one run, however many days.

    ``in_process`` (only with Dagster's default executor, whose config has that choice) runs an
    incremental run's steps in one process.
    """
    tags = {TRIGGER_TAG: trigger, **(plan.run_tags() if isinstance(plan, PollPlan) else {"lms/changed_rows": str(plan.rows)})}
    partition_key = None
    if plan.first_partition == plan.last_partition:
        partition_key = plan.first_partition
    else:
        tags.update(partition_range_tags(plan.first_partition, plan.last_partition))
    if not plan.is_full_history:  # a first start's history run may rightly take hours
        tags["dagster/max_runtime"] = str(INCREMENTAL_RUN_MAX_RUNTIME_SECONDS)
    return RunRequest(
        run_key=plan.run_key,
        job_name=INGEST_JOB_NAME,
        run_config={
            **ingest_run_config(plan.changed_since, plan.changed_until),
            **(IN_PROCESS_CONFIG if in_process and not plan.is_full_history else {}),
        },
        partition_key=partition_key,
        tags=tags,
    )


def run_state(instance: DagsterInstance, run_key: str) -> RunState:
    """How the runs launched for ``run_key`` (Dagster's retries keep the key) stand."""
    runs = instance.get_runs(RunsFilter(tags={"dagster/run_key": run_key}), limit=10)
    if not runs:
        return RunState.WAITING
    if any(r.status == DagsterRunStatus.SUCCESS for r in runs):
        return RunState.DONE
    if any(not r.is_finished for r in runs) or runs[0].tags.get("dagster/will_retry") == "true":
        return RunState.RUNNING
    return RunState.FAILED


def read_pending(cursor: str | None) -> list[PendingRun]:
    try:
        return [PendingRun.from_json(p) for p in json.loads(cursor or "{}").get(PENDING_KEY, [])]
    except (ValueError, TypeError, AttributeError):
        return []


def sensor_cursor(marks: Cursor, pending: list[PendingRun]) -> str:
    data = json.loads(marks.to_json())
    if pending:
        data[PENDING_KEY] = [p.to_json() for p in pending]
    return json.dumps(data)


def build_lms_activity_sensor(settings: Settings) -> SensorDefinition:
    """The sensor, ticking every ``LMS_ACTIVITY_POLL_INTERVAL`` seconds, running when monitoring is enabled."""
    timezone, partitions_start = settings.timezone, settings.partitions_start
    in_process = settings.executor == "multiprocess"  # Celery and in_process runs keep their executor
    # From the settings the code location loaded, not a resource: Dagster builds every resource a
    # sensor asks for again on every tick, and that was a fifth of a no-change tick.
    lookback = dt.timedelta(seconds=settings.lookback_seconds)

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
    def lms_activity_sensor(context: SensorEvaluationContext, lms: LMSResource) -> SensorResult:
        followed = review(read_pending(context.cursor), lambda key: run_state(context.instance, key))
        for item in followed.again:
            context.log.warning(f"ingest run failed for good; requesting {item.describe()} again")
        for item in followed.given_up:
            context.log.error(f"ingest of {item.describe()} failed {item.requests} times; backfill those days by hand")
        result = plan_poll(
            lms,
            Cursor.from_json(context.cursor),
            timezone=timezone,
            partitions_start=partitions_start,
            lookback=lookback,
        )
        warnings = result.warnings()
        for line in warnings:
            context.log.warning(line)
        requests = [run_request_for(item, in_process=in_process) for item in followed.again]
        pending = followed.pending
        if result.plan is not None:
            context.log.info(result.plan.describe())
            requests.append(run_request_for(result.plan, in_process=in_process))
            pending = [*pending, PendingRun.of(result.plan)]
        cursor = sensor_cursor(result.cursor, pending)
        if not requests:
            waiting = f"; {len(pending)} requested run(s) not finished yet" if pending else ""
            noted = "".join(f"; {line}" for line in warnings)
            return SensorResult(skip_reason=f"{result.skip_reason}{waiting}{noted}", cursor=cursor)
        return SensorResult(run_requests=requests, cursor=cursor)

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


def build_notify_after_ingest_sensor(config: Settings, notify_job: JobDefinition) -> RunStatusSensorDefinition:
    """Runs ``notify_mentors_job`` after every successful run that materialised ``lms_activity_events``,
    when a run is due (``Outbox.backlog``; an ingest that enqueued nothing leaves nothing to do).

    It watches every job of the code location, not only ``lms_ingest_job``: assets
    materialised and backfilled from the UI run in Dagster's implicit asset job.
    """

    @run_status_sensor(
        run_status=DagsterRunStatus.SUCCESS,
        name=NOTIFY_SENSOR_NAME,
        request_job=notify_job,
        minimum_interval_seconds=NOTIFY_SENSOR_INTERVAL_SECONDS,
        default_status=DefaultSensorStatus.RUNNING if config.notify_enabled else DefaultSensorStatus.STOPPED,
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
        if reason := why_no_run(warehouse.outbox(), settings, dt.datetime.now(dt.UTC)):
            return SkipReason(f"after run {run.run_id}: {reason}")
        return notify_request_after(run.run_id)

    return notify_mentors_after_ingest
