"""``notify_mentors_job``: one op that works through the notification outbox."""

from dagster import in_process_executor, job

from lms_activity_pipeline import names
from lms_activity_pipeline.defs.notify.ops import send_mentor_notifications


@job(
    name=names.NOTIFY_JOB,
    executor_def=in_process_executor,
    description="Send mentors Zulip DMs for the open (event, mentor) pairs of lms_event_log and record each outcome.",
    tags={names.NOTIFY_TAG: "true"},
)
def notify_mentors_job() -> None:
    """Safe to run concurrently: pairs are claimed. In-process whatever ``LMS_EXECUTOR`` says: a step process
    (or a Celery task) for its single op would only add seconds of start-up to every notification run."""
    send_mentor_notifications()
