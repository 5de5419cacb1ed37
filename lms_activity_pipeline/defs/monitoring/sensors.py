"""``lms_activity_sensor``: polls the LMS and requests incremental ``lms_ingest_job`` runs.
``lms-activity monitor`` evaluates this sensor too (see ``cli/poller.py``)."""

import datetime as dt

from dagster import DefaultSensorStatus, SensorEvaluationContext, SensorResult, sensor

from lms_activity_pipeline import names
from lms_activity_pipeline.defs import runs
from lms_activity_pipeline.defs.ingest.jobs import lms_ingest_job
from lms_activity_pipeline.defs.resources import LMSResource, WarehouseResource
from lms_activity_pipeline.defs.settings import SETTINGS
from lms_activity_pipeline.lms.demo import ensure_demo_lms
from lms_activity_pipeline.polling.tick import PollConfig, poll

POLL = PollConfig(
    timezone=SETTINGS.timezone,
    partitions_start=SETTINGS.partitions_start,
    lookback=dt.timedelta(seconds=SETTINGS.lookback_seconds),
)
#: Celery and in_process runs keep their executor; Dagster's default multiprocess one is skipped for the
#: small incremental runs (see ``runs.IN_PROCESS_CONFIG``).
INCREMENTAL_IN_PROCESS = SETTINGS.executor == "multiprocess"


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
    for item in tick.requests:
        context.log.info(item.describe())
    if not requests:
        return SensorResult(skip_reason=tick.skip_reason(), cursor=tick.cursor)
    return SensorResult(run_requests=requests, cursor=tick.cursor)
