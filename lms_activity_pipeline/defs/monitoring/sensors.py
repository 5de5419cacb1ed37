"""``lms_activity_sensor``: polls the LMS and requests incremental ``lms_ingest_job`` runs;
``lms_webhook_sensor``: the same poll, at once, when LMS webhooks wait in the inbox.
``lms-activity monitor`` evaluates the poll too (see ``cli/poller.py``)."""

import datetime as dt

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, SkipReason, sensor

from lms_activity_pipeline import names
from lms_activity_pipeline.defs import runs
from lms_activity_pipeline.defs.ingest.jobs import lms_ingest_job
from lms_activity_pipeline.defs.notify.jobs import notify_mentors_job
from lms_activity_pipeline.defs.resources import LMSResource, WarehouseResource
from lms_activity_pipeline.defs.settings import SETTINGS
from lms_activity_pipeline.lms.demo import ensure_demo_lms
from lms_activity_pipeline.polling.tick import PollConfig, poll
from lms_activity_pipeline.warehouse import webhook_inbox

POLL = PollConfig(
    timezone=SETTINGS.timezone,
    partitions_start=SETTINGS.partitions_start,
    lookback=dt.timedelta(seconds=SETTINGS.lookback_seconds),
)
#: Celery and in_process runs keep their executor; Dagster's default multiprocess one is skipped for the
#: small incremental runs (see ``runs.IN_PROCESS_CONFIG``).
INCREMENTAL_IN_PROCESS = SETTINGS.executor == "multiprocess"
#: How often ``lms_webhook_sensor`` looks at the inbox (one index lookup). Dagster's sensor daemon
#: evaluates sensors at most every 5 s whatever is asked, so a webhook waits 0-5 s for its tick.
WEBHOOK_INTERVAL_SECONDS = 1


def poll_requests(
    context: SensorEvaluationContext, lms: LMSResource, warehouse: WarehouseResource, *, companions: bool = False
) -> SensorResult:
    """One poll (:func:`~lms_activity_pipeline.polling.tick.poll`, the shared cursor) as a sensor result.

    ``companions``: when the poll consumed LMS webhook announcements, each ingest run comes with a companion
    notify run (``runs.companion_notify_request``), so announced changes reach mentors a run start-up sooner.
    """
    if ensure_demo_lms(SETTINGS):  # no LMS_DATABASE_URL: the demo LMS, created on the first tick as by the CLI
        context.log.info(f"no LMS_DATABASE_URL set: created the demo LMS at {SETTINGS.demo_lms_path}")
    tick = poll(
        lms.reader(),
        warehouse.store(),
        lambda key: runs.run_state(context.instance, key),
        POLL,
        legacy_cursor=context.cursor,
    )
    for line in tick.messages + tick.warnings():
        context.log.warning(line)
    requests = [runs.ingest_request(item, in_process=INCREMENTAL_IN_PROCESS) for item in tick.requests]
    if companions and tick.announced and SETTINGS.notify_enabled:
        requests += [runs.companion_notify_request(r) for r in requests]
    for item in tick.requests:
        context.log.info(item.describe())
    if not requests:
        return SensorResult(skip_reason=tick.skip_reason(), cursor=tick.cursor)
    return SensorResult(run_requests=requests, cursor=tick.cursor)


@sensor(
    name=names.ACTIVITY_SENSOR,
    job=lms_ingest_job,
    minimum_interval_seconds=SETTINGS.poll_interval,
    default_status=DefaultSensorStatus.RUNNING if SETTINGS.monitor_enabled else DefaultSensorStatus.STOPPED,
    description=(
        "Polls the LMS updated_at high-water marks (with a lookback for late commits) and requests one "
        "incremental lms_ingest_job run for the days the changed rows touch; follows each run until it "
        "succeeds. Its cursor lives in the warehouse (lms_monitor_state), shared with lms-activity monitor."
    ),
)
def lms_activity_sensor(
    context: SensorEvaluationContext, lms: LMSResource, warehouse: WarehouseResource
) -> SensorResult:
    return poll_requests(context, lms, warehouse)


@sensor(
    name=names.WEBHOOK_SENSOR,
    jobs=[lms_ingest_job, notify_mentors_job],
    minimum_interval_seconds=WEBHOOK_INTERVAL_SECONDS,
    default_status=(
        DefaultSensorStatus.RUNNING
        if SETTINGS.monitor_enabled and SETTINGS.webhook_secret
        else DefaultSensorStatus.STOPPED
    ),
    description=(
        "When LMS webhooks wait in lms_webhook_inbox, polls at once instead of at lms_activity_sensor's "
        "next tick: the same poll and shared cursor, so the announced rows (however old) and whatever else "
        "changed are requested once, by whichever sensor polls first. A poll that consumed webhooks requests "
        "each ingest run with a notify_mentors_job run beside it that waits for it and sends at once (a run "
        "start-up sooner than notify_mentors_after_ingest). Runs by default when LMS_WEBHOOK_SECRET is set in the "
        "daemon's environment."
    ),
)
def lms_webhook_sensor(
    context: SensorEvaluationContext, lms: LMSResource, warehouse: WarehouseResource
) -> SensorResult | SkipReason:
    if not webhook_inbox.has_pending(warehouse.store().engine):
        return SkipReason("no LMS webhook waiting in lms_webhook_inbox")
    return poll_requests(context, lms, warehouse, companions=True)
