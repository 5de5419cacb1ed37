"""At-risk digests in the notify runs, and ``risk_feedback_job`` (mentors' reactions read back from Zulip)."""

import datetime as dt
from typing import Any

from dagster import (
    DefaultScheduleStatus,
    MetadataValue,
    OpExecutionContext,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    in_process_executor,
    job,
    op,
    schedule,
)

from lms_activity_pipeline import names
from lms_activity_pipeline.defs.partitions import DAILY
from lms_activity_pipeline.defs.resources import LMSResource, RiskSettings, WarehouseResource, ZulipResource
from lms_activity_pipeline.notify.notifier import ZulipSetup
from lms_activity_pipeline.notify.risk_digest import DigestSummary, RiskDigests, digest_due, read_feedback


def risk_digests(
    context: OpExecutionContext,
    warehouse: WarehouseResource,
    lms: LMSResource,
    setup: ZulipSetup | None,
    risk: RiskSettings,
) -> RiskDigests:
    """The digest sender of a notify run (``setup=None``: dry-run)."""
    return RiskDigests(
        warehouse.store().engine,
        lms.reader().users,
        setup,
        frequency=risk.digest_frequency,
        timezone=DAILY.timezone or "UTC",
        run_id=context.run_id,
        log=context.log,
    )


def digest_metadata(summary: DigestSummary) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "risk_digest_day": MetadataValue.text(str(summary.day) if summary.day else "none"),
        "risk_digest_flags_enqueued": MetadataValue.int(summary.enqueued),
        "risk_digest_messages": MetadataValue.int(summary.messages),
        **{f"risk_digest_{status}": MetadataValue.int(n) for status, n in sorted(summary.counts.items())},
    }
    if summary.preview:
        meta["risk_digest_preview"] = MetadataValue.md("\n\n---\n\n".join(summary.preview))
    return meta


@op(
    name="read_risk_feedback",
    description="Read mentors' 👍/👎 reactions to the at-risk digests of the last 30 days into risk_feedback.",
)
def read_risk_feedback(context: OpExecutionContext, warehouse: WarehouseResource, zulip: ZulipResource) -> None:
    if not zulip.is_configured:
        context.log.info("no Zulip configured (dry-run): no reactions to read")
        return
    summary = read_feedback(
        warehouse.store().engine, zulip.gateway(), zulip.retry_policy(), now=dt.datetime.now(dt.UTC), log=context.log
    )
    context.add_output_metadata(
        {
            "messages_read": MetadataValue.int(summary.messages),
            "messages_unreadable": MetadataValue.int(summary.unreadable),
            "reactions": MetadataValue.int(summary.reactions),
            "feedback_rows_recorded": MetadataValue.int(summary.recorded),
        }
    )


@job(
    name=names.RISK_FEEDBACK_JOB,
    executor_def=in_process_executor,
    description="Read mentors' 👍 (useful) / 👎 (wrongly flagged) reactions to at-risk digests into risk_feedback.",
)
def risk_feedback_job() -> None:
    read_risk_feedback()


@schedule(
    name=names.RISK_FEEDBACK_SCHEDULE,
    cron_schedule="35 * * * *",
    job=risk_feedback_job,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every hour: read the reactions to recent at-risk digests.",
)
def risk_feedback_schedule(context: ScheduleEvaluationContext, zulip: ZulipResource) -> RunRequest | SkipReason:
    if not zulip.is_configured:
        return SkipReason("no Zulip configured: no reactions to read")
    return RunRequest(run_key=f"risk-feedback-{context.scheduled_execution_time:%Y%m%d%H}")


def risk_digest_due(warehouse: WarehouseResource, risk: RiskSettings) -> bool:
    """Would a notify run now send an at-risk digest (one is due, or one is open)?"""
    return digest_due(warehouse.store().engine, frequency=risk.digest_frequency, timezone=DAILY.timezone or "UTC")
