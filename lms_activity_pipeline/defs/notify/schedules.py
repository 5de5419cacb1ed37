"""``notify_mentors_retry_schedule``: picks up notifications left open (failed runs, outages, disabled spells)."""

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from lms_activity_pipeline import names
from lms_activity_pipeline.defs import runs
from lms_activity_pipeline.defs.notify.jobs import notify_mentors_job
from lms_activity_pipeline.defs.resources import PipelineSettings, RiskSettings, WarehouseResource
from lms_activity_pipeline.defs.risk.digests import risk_digest_due
from lms_activity_pipeline.defs.settings import SETTINGS

NOTIFY_RETRY_CRON = "*/10 * * * *"


@schedule(
    name=names.NOTIFY_RETRY_SCHEDULE,
    cron_schedule=NOTIFY_RETRY_CRON,
    job=notify_mentors_job,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING if SETTINGS.notify_enabled else DefaultScheduleStatus.STOPPED,
    description=(
        "Every 10 minutes, when something is due: send pairs left open (pending, failed with a certain "
        "failure), recover claims of stopped runs, look up uncertain deliveries on Zulip."
    ),
)
def notify_mentors_retry_schedule(
    context: ScheduleEvaluationContext, warehouse: WarehouseResource, settings: PipelineSettings, risk: RiskSettings
) -> RunRequest | SkipReason:
    reason = settings.why_no_notify_run(warehouse.store().outbox())
    # students at risk: an at-risk digest that is due needs a run too
    if reason and settings.notify_enabled and risk_digest_due(warehouse, risk):
        reason = None
    return SkipReason(reason) if reason else runs.notify_request("schedule")
