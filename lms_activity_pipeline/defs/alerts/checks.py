"""Asset checks on ``lms_event_log`` (the notification outbox): the backlog and the dead letter.

Both are WARN checks (the outbox stays usable) run by ``lms_quality_checks_job`` or from the asset's page;
the alerts (``lms_health_alerts``) watch the same numbers every minute.
"""

import datetime as dt

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from lms_activity_pipeline import names
from lms_activity_pipeline.defs.resources import AlertsResource, PipelineSettings, WarehouseResource
from lms_activity_pipeline.domain.alerts import RETRY_COMMAND
from lms_activity_pipeline.warehouse.health import OutboxHealth, outbox_health


def notification_health(warehouse: WarehouseResource, settings: PipelineSettings, now: dt.datetime) -> OutboxHealth:
    """The outbox's health, its backlog counting only pairs due now under mentors' preferences and rules."""
    store = warehouse.store()
    health = outbox_health(store.engine, now)
    decision = settings.notify_decision(store.outbox(), now)
    return health if decision is None else health.with_due(decision.due_pending, decision.due_since)


@asset_check(
    asset=names.LMS_EVENT_LOG,
    name=names.BACKLOG_CHECK,
    description="No notification has been pending longer than LMS_ALERT_BACKLOG_MINUTES.",
)
def notification_backlog(
    warehouse: WarehouseResource, settings: PipelineSettings, alerts: AlertsResource
) -> AssetCheckResult:
    now = dt.datetime.now(dt.UTC)
    health = notification_health(warehouse, settings, now)
    minutes = health.pending_minutes(now)
    limit = alerts.backlog_minutes
    passed = not health.pending or limit <= 0 or minutes <= limit
    return AssetCheckResult(
        passed=passed,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"{health.pending} pending, the oldest for {minutes:.0f} min (limit {limit:g} min)"
            if health.pending
            else "nothing pending"
        ),
        metadata={
            "pending": MetadataValue.int(health.pending),
            "oldest_pending_minutes": MetadataValue.float(round(minutes, 1)),
            "limit_minutes": MetadataValue.float(float(limit)),
        },
    )


@asset_check(
    asset=names.LMS_EVENT_LOG,
    name=names.DEAD_LETTER_CHECK,
    description=(
        "The dead letter is empty: no failed pair that automatic runs will not retry (attempt cap reached, "
        f"or an uncertain delivery that cannot be looked up). Retry them after a fix: `{RETRY_COMMAND}`."
    ),
)
def dead_letter(warehouse: WarehouseResource) -> AssetCheckResult:
    health = outbox_health(warehouse.store().engine, dt.datetime.now(dt.UTC))
    return AssetCheckResult(
        passed=health.dead_letter == 0,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"{health.dead_letter} pair(s) of {health.dead_letter_mentors} mentor(s) in the dead letter; "
            f"after fixing the cause: {RETRY_COMMAND}"
            if health.dead_letter
            else "dead letter empty"
        ),
        metadata={
            "dead_letter": MetadataValue.int(health.dead_letter),
            "dead_letter_mentors": MetadataValue.int(health.dead_letter_mentors),
            "unsettled_uncertain": MetadataValue.int(health.unsettled_uncertain),
            "retry_command": MetadataValue.text(RETRY_COMMAND),
        },
    )
