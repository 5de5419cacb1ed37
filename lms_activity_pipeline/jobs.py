"""Jobs: the partitioned ingest (assets), a whole-table quality audit and the notification job (ops)."""

from __future__ import annotations

from dagster import AssetSelection, JobDefinition, define_asset_job, in_process_executor, job
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from lms_activity_pipeline.ops.notify import send_mentor_notifications

INGEST_JOB_NAME = "lms_ingest_job"
NOTIFY_JOB_NAME = "notify_mentors_job"
QUALITY_JOB_NAME = "lms_quality_checks_job"


def build_ingest_job() -> UnresolvedAssetJobDefinition:
    """Every asset of the ``lms_activity`` group for a day or a range of days (partitions come from the assets).

    No tags for queueing or retries: its assets are in the ``lms_ingest`` pool and the instance retries
    every failed run (``run_retries: max_retries: 1``), so runs of Dagster's implicit asset job (UI
    materialisations, backfills) are serialised and retried the same way.
    """
    return define_asset_job(
        INGEST_JOB_NAME,
        selection=AssetSelection.groups("lms_activity"),
        description=(
            "Extract LMS attempts for the partition's days, classify them, upsert the event tables, run the checks "
            "and recompute the feature tables."
        ),
    )


def build_notify_job() -> JobDefinition:
    """One op that works through the notification outbox (safe to run concurrently: pairs are claimed).

    In-process whatever ``LMS_EXECUTOR`` says: a step process (or a Celery task) for its single op
    would only add seconds of start-up to every notification run.
    """

    @job(
        name=NOTIFY_JOB_NAME,
        executor_def=in_process_executor,
        description="Send mentors Zulip DMs for the open (event, mentor) pairs of lms_event_log and record each outcome.",
        tags={"lms/notify": "true"},
    )
    def notify_mentors_job() -> None:
        send_mentor_notifications()

    return notify_mentors_job


def build_quality_checks_job() -> UnresolvedAssetJobDefinition:
    """Every asset check over the whole tables, materialising nothing (an audit, e.g. after a manual fix)."""
    return define_asset_job(
        QUALITY_JOB_NAME,
        selection=AssetSelection.all_asset_checks(),
        description="Run every data-quality check over the whole warehouse tables, without materialising anything.",
    )
