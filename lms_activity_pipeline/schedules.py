"""``notify_mentors_retry_schedule``: picks up notifications left open (failed runs, outages, disabled spells)."""

import datetime as dt

from dagster import (
    DefaultScheduleStatus,
    JobDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from lms_activity_pipeline.config import Settings
from lms_activity_pipeline.ops.notify import why_no_run
from lms_activity_pipeline.resources.settings import PipelineSettings
from lms_activity_pipeline.resources.warehouse import WarehouseResource
from lms_activity_pipeline.sensors import TRIGGER_TAG

NOTIFY_SCHEDULE_NAME = "notify_mentors_retry_schedule"
NOTIFY_RETRY_CRON = "*/10 * * * *"


def build_notify_retry_schedule(config: Settings, notify_job: JobDefinition) -> ScheduleDefinition:
    """Every 10 minutes, a notify run when one is due (``Outbox.backlog``): pending pairs, failed ones whose
    delivery certainly failed (below the attempt cap), stale claims, uncertain deliveries to look up."""

    @schedule(
        name=NOTIFY_SCHEDULE_NAME,
        cron_schedule=NOTIFY_RETRY_CRON,
        job=notify_job,
        execution_timezone="UTC",
        default_status=DefaultScheduleStatus.RUNNING if config.notify_enabled else DefaultScheduleStatus.STOPPED,
        description=(
            "Every 10 minutes, when something is due: send pairs left open (pending, failed with a certain "
            "failure), recover claims of stopped runs, look up uncertain deliveries on Zulip."
        ),
    )
    def notify_mentors_retry_schedule(
        context: ScheduleEvaluationContext, warehouse: WarehouseResource, settings: PipelineSettings
    ) -> RunRequest | SkipReason:
        if reason := why_no_run(warehouse.outbox(), settings, dt.datetime.now(dt.UTC)):
            return SkipReason(reason)
        return RunRequest(tags={TRIGGER_TAG: "schedule"})

    return notify_mentors_retry_schedule
