"""``notify_mentors_retry_schedule``: picks up notifications left open (failed runs, outages, disabled spells)."""

from __future__ import annotations

from dagster import DefaultScheduleStatus, JobDefinition, ScheduleDefinition

from lms_activity_pipeline.config import Settings
from lms_activity_pipeline.sensors import TRIGGER_TAG

NOTIFY_SCHEDULE_NAME = "notify_mentors_retry_schedule"
NOTIFY_RETRY_CRON = "*/10 * * * *"


def build_notify_retry_schedule(settings: Settings, notify_job: JobDefinition) -> ScheduleDefinition:
    """Every 10 minutes: pending pairs, and failed ones whose delivery certainly failed (below the attempt cap)."""
    return ScheduleDefinition(
        name=NOTIFY_SCHEDULE_NAME,
        cron_schedule=NOTIFY_RETRY_CRON,
        job=notify_job,
        execution_timezone="UTC",
        tags={TRIGGER_TAG: "schedule"},
        default_status=DefaultScheduleStatus.RUNNING if settings.notify_enabled else DefaultScheduleStatus.STOPPED,
        description="Retry open mentor notifications (pending, and failed with a certain failure) every 10 minutes.",
    )
