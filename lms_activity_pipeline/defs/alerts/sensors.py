"""Operational alerts: ``lms_run_failure_alerts`` (a run of the ingest or notify jobs that failed for good)
and ``lms_health_alerts`` (backlog, lag, sensor errors, failing mentors, unsettleable deliveries).

Both call :func:`~lms_activity_pipeline.notify.alerts.raise_alerts`; neither requests runs nor ever fails a
tick because an alert could not be sent (it is logged and tried again on a later tick).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from dagster import (
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    run_failure_sensor,
    sensor,
)
from dagster._core.scheduler.instigation import InstigatorType, TickStatus

from lms_activity_pipeline import names
from lms_activity_pipeline.defs.alerts.checks import notification_health
from lms_activity_pipeline.defs.notify.jobs import notify_mentors_job
from lms_activity_pipeline.defs.notify.sensors import materialised_events
from lms_activity_pipeline.defs.resources import (
    AlertsResource,
    LMSResource,
    PipelineSettings,
    WarehouseResource,
    ZulipResource,
)
from lms_activity_pipeline.domain.alerts import (
    HEALTH_KINDS,
    SENSOR_ERROR_TICKS,
    FailedRun,
    RunRetries,
    kind_of,
    partition_window,
    run_failure_alert,
    will_be_retried,
)
from lms_activity_pipeline.domain.alerts import health_alerts as rules
from lms_activity_pipeline.notify.alerts import Log, raise_alerts
from lms_activity_pipeline.warehouse.alerts import AlertStore
from lms_activity_pipeline.warehouse.freshness import freshness

#: The sensors whose failing ticks are an incident.
WATCHED_SENSORS = (names.ACTIVITY_SENSOR, names.WEBHOOK_SENSOR, names.NOTIFY_AFTER_INGEST_SENSOR)
HEALTH_INTERVAL_SECONDS = 60


def failed_run(context: RunFailureSensorContext) -> FailedRun:
    """The job, window, failing step and its error (the run's own failure message without a failed step)."""
    run = context.dagster_run
    step, error = None, context.failure_event.message or "run failed"
    for event in context.get_step_failure_events():
        step = event.step_key
        info = getattr(event.event_specific_data, "error", None)
        while info is not None and info.cause is not None:  # the user code's error, not Dagster's wrapper
            info = info.cause
        error = (info.message if info is not None else None) or event.message or error
        break
    return FailedRun(run.job_name, run.run_id, partition_window(run.tags), step, error)


def run_retries(instance: DagsterInstance) -> RunRetries:
    return RunRetries(instance.run_retries_enabled, instance.run_retries_max_retries)


def watched(run: DagsterRun) -> bool:
    """A run of the ingest or notify work however launched: ``lms_ingest_job``, ``notify_mentors_job``, or
    Dagster's implicit asset job materialising ``lms_activity_events`` (a UI materialisation or backfill)."""
    return run.job_name == notify_mentors_job.name or materialised_events(run)


@run_failure_sensor(
    name=names.RUN_FAILURE_ALERTS_SENSOR,
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=10,
    description=(
        "Alerts (Zulip channel LMS_ALERT_ZULIP_STREAM, or the run logs) when a run of lms_ingest_job or "
        "notify_mentors_job (or a UI materialisation or backfill of lms_activity_events) failed for good: after "
        "Dagster's run retries. One alert per job and window."
    ),
)
def lms_run_failure_alerts(
    context: RunFailureSensorContext, warehouse: WarehouseResource, zulip: ZulipResource, alerts: AlertsResource
) -> SkipReason:
    run = context.dagster_run
    if not watched(run):
        return SkipReason(f"run {run.run_id} of {run.job_name}: not alerted on")
    # Only runs launched from a code location can be retried by the daemon; one executed in-process
    # (``lms-activity monitor``) is final whatever its tags say.
    if run.remote_job_origin is not None and will_be_retried(run.tags, run_retries(context.instance)):
        return SkipReason(f"run {run.run_id} failed; Dagster retries it: no alert")
    alert = run_failure_alert(failed_run(context), alerts.ui_url)
    report = raise_alerts(
        AlertStore(warehouse.store().engine),
        alerts.sender(zulip),
        [alert],
        scope=(),
        now=dt.datetime.now(dt.UTC),
        log=context.log,
        per_hour=alerts.per_hour,
    )
    return SkipReason(f"run {run.run_id} failed for good: {report.summary()}")


# --- health --------------------------------------------------------------------------------------


def sensor_errors(instance: DagsterInstance, sensors: tuple[str, ...] = WATCHED_SENSORS) -> dict[str, tuple[int, str]]:
    """Per watched sensor: how many of its latest ticks failed in a row, and the last error."""
    found: dict[str, tuple[int, str]] = {}
    if instance.schedule_storage is None:  # an ephemeral instance keeps no ticks
        return found
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name not in sensors:
            continue
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=SENSOR_ERROR_TICKS * 2)
        failed = 0
        for tick in ticks:  # newest first
            if tick.status != TickStatus.FAILURE:
                break
            failed += 1
        if failed:
            error = ticks[0].error.message if ticks[0].error else "tick failed"
            found[state.instigator_name] = (failed, error)
    return found


def recovered_runs(instance: DagsterInstance, store: AlertStore) -> list[str]:
    """Open run-failure incidents whose job and window have had a successful run since they opened."""
    keys = []
    for key, incident in store.incidents().items():
        if not incident.is_open or kind_of(key) != "run_failed":
            continue
        _, job, window = key.split(":", 2)
        tags: Mapping[str, str]
        if ".." in window:
            start, end = window.split("..", 1)
            tags = {names.RANGE_START_TAG: start, names.RANGE_END_TAG: end}
        else:
            tags = {} if window == "all" else {names.PARTITION_TAG: window}
        runs = instance.get_runs(
            RunsFilter(
                job_name=job, statuses=[DagsterRunStatus.SUCCESS], tags=dict(tags), created_after=incident.opened_at
            ),
            limit=1,
        )
        if runs:
            keys.append(key)
    return keys


@sensor(
    name=names.HEALTH_ALERTS_SENSOR,
    minimum_interval_seconds=HEALTH_INTERVAL_SECONDS,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Every minute: alerts when notifications wait longer than LMS_ALERT_BACKLOG_MINUTES, the warehouse lags "
        "the LMS by more than LMS_ALERT_LAG_MINUTES, lms_activity_sensor's ticks keep failing, a mentor's DMs "
        "keep failing or uncertain deliveries cannot be settled; a 'resolved' message when each clears. "
        "Resolves a failed-run alert once its job and window succeed."
    ),
)
def lms_health_alerts(
    context: SensorEvaluationContext,
    lms: LMSResource,
    warehouse: WarehouseResource,
    settings: PipelineSettings,
    zulip: ZulipResource,
    alerts: AlertsResource,
) -> SkipReason:
    return SkipReason(evaluate_health(context.instance, lms, warehouse, settings, zulip, alerts, context.log))


def evaluate_health(
    instance: DagsterInstance,
    lms: LMSResource,
    warehouse: WarehouseResource,
    settings: PipelineSettings,
    zulip: ZulipResource,
    alerts: AlertsResource,
    log: Log,
    now: dt.datetime | None = None,
) -> str:
    """One evaluation of the health checks (the sensor's tick, or ``lms-activity monitor``); returns its summary."""
    now = now or dt.datetime.now(dt.UTC)
    store = warehouse.store()
    alert_store = AlertStore(store.engine)
    lag: float | None = None
    try:
        lag_seconds = freshness(lms.reader(), store.engine).lag_seconds
        lag = None if lag_seconds is None else lag_seconds / 60
    except Exception as exc:  # noqa: BLE001 - an LMS outage shows as failing sensor ticks, not here
        log.info(f"lag not measured: {type(exc).__name__}: {exc}")
    facts = notification_health(warehouse, settings, now).facts(now, lag, sensor_errors(instance))
    active = rules(facts, alerts.thresholds(), alerts.ui_url)
    scope = (*HEALTH_KINDS, *recovered_runs(instance, alert_store))
    report = raise_alerts(
        alert_store,
        alerts.sender(zulip),
        active,
        scope=scope,
        now=now,
        log=log,
        per_hour=alerts.per_hour,
    )
    return report.summary()
