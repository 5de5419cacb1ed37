"""``send_mentor_notifications``: the op of ``notify_mentors_job``, a thin shell around the :class:`Notifier`."""

import datetime as dt
import time
from typing import Any

from dagster import AssetMaterialization, Config, MetadataValue, Nothing, OpExecutionContext, Out, op
from pydantic import Field

from lms_activity_pipeline import names
from lms_activity_pipeline.defs import runs
from lms_activity_pipeline.defs.resources import (
    LMSResource,
    PipelineSettings,
    RiskSettings,
    WarehouseResource,
    ZulipResource,
)
from lms_activity_pipeline.domain.alerts import RETRY_COMMAND
from lms_activity_pipeline.domain.outbox import OutboxStatus
from lms_activity_pipeline.notify.notifier import Notifier, NotifySummary, ZulipSetup
from lms_activity_pipeline.notify.policy import NotifyPolicy
from lms_activity_pipeline.notify.request import NotifyRequest
from lms_activity_pipeline.polling.followup import RunState
from lms_activity_pipeline.settings import parse_event_types
from lms_activity_pipeline.warehouse.health import outbox_health
from lms_activity_pipeline.warehouse.outbox import (
    DEFAULT_MAX_ATTEMPTS,
    Selection,
)

#: The defaults of a run: what the sensors, the schedule and the CLI launch.
DEFAULT = NotifyRequest()


class NotifyConfig(Config):
    """Which open pairs this run takes (defaults: what the sensor and the retry schedule want)."""

    event_types: list[str] = Field(default=[], description="Only these event types (empty: every monitored type).")
    time_budget_minutes: float = Field(
        default=DEFAULT.time_budget.total_seconds() / 60,
        gt=0,
        description=(
            "The run takes every mentor with pairs due, oldest first; after this long it starts no new mentor "
            "(the one in hand is finished) and leaves the rest to the next run. Keep it below claim_timeout_minutes."
        ),
    )
    retry_all_failed: bool = Field(
        default=False,
        description=(
            "Also retry failed pairs that reached max_attempts, and uncertain deliveries Zulip cannot be asked "
            "about (lms-activity monitor --process-pending)."
        ),
    )
    max_attempts: int = Field(
        default=DEFAULT_MAX_ATTEMPTS,
        ge=0,
        description="Automatic retries stop after this many send attempts (0: no cap).",
    )
    claim_timeout_minutes: float = Field(
        default=DEFAULT.claim_timeout.total_seconds() / 60,
        gt=0,
        description="Claims older than this belong to dead runs and are recovered.",
    )
    settle_uncertain_after_seconds: float = Field(
        default=DEFAULT.settle_after.total_seconds(),
        ge=0,
        description="Uncertain deliveries are looked up on Zulip once their request is this old.",
    )
    after_ingest_run_key: str | None = Field(
        default=None,
        description=(
            "Launched beside an ingest run (lms_webhook_sensor): wait until the run of this run key has stored its "
            "events (or ended), then send. Its process starts while the ingest runs, so the DMs go out a run "
            "start-up earlier."
        ),
    )
    wait_for_ingest_minutes: float = Field(
        default=10,
        gt=0,
        description="How long after_ingest_run_key is waited for; then this run sends what is due and ends.",
    )


#: How often a companion run asks whether its ingest run has finished.
COMPANION_POLL_SECONDS = 0.2
#: The sensor submits the ingest run just before its companion: a run key with no run after this long was
#: never launched (Dagster skipped it), and there is nothing to wait for.
NEVER_LAUNCHED_SECONDS = 60


def wait_for_ingest(context: OpExecutionContext, run_key: str, minutes: float) -> bool:
    """Wait until the ingest run of ``run_key`` has stored its events (its ``lms_activity_events`` step
    succeeded: the feature steps after it need not end first) or finished, or ``minutes`` passed.
    True when it did (tag ``lms/companion_saw=finished``)."""
    start = time.monotonic()

    def ended() -> tuple[bool, RunState]:
        state, stored = runs.ingest_progress(context.instance, run_key)
        return state in (RunState.DONE, RunState.FAILED) or stored, state

    done, state = ended()
    while (
        not done
        and (state == RunState.RUNNING or time.monotonic() - start < NEVER_LAUNCHED_SECONDS)
        and time.monotonic() - start < minutes * 60
    ):
        time.sleep(COMPANION_POLL_SECONDS)
        done, state = ended()
    context.instance.add_run_tags(context.run_id, {names.COMPANION_SAW_TAG: "finished" if done else "timeout"})
    if done and state == RunState.FAILED:
        context.log.info(f"ingest run {run_key} failed: sending what is due anyway")
    elif done:
        context.log.info(f"ingest run {run_key} stored its events: sending what it enqueued")
    else:
        context.log.info(
            f"ingest run {run_key} not finished after {minutes:g} min: sending what is due now; "
            "notify_mentors_after_ingest follows the run when it ends"
        )
    return done


def selected_event_types(config: NotifyConfig, settings: PipelineSettings) -> tuple[str, ...]:
    """The config's types (validated) within ``LMS_EVENT_TYPES_TO_MONITOR``."""
    monitored = settings.monitored_event_types
    if not config.event_types:
        return monitored
    wanted = parse_event_types("event_types", ",".join(config.event_types))
    return tuple(t for t in wanted if t in monitored)


def notify_request(
    config: NotifyConfig,
    event_types: tuple[str, ...],
    *,
    enabled: bool,
    max_age_hours: float,
    policy: NotifyPolicy | None = None,
) -> NotifyRequest:
    """What a run with this op config does."""
    return NotifyRequest(
        selection=Selection(event_types, config.retry_all_failed, config.max_attempts),
        enabled=enabled,
        max_age=dt.timedelta(hours=max_age_hours),
        claim_timeout=dt.timedelta(minutes=config.claim_timeout_minutes),
        time_budget=dt.timedelta(minutes=config.time_budget_minutes),
        settle_after=dt.timedelta(seconds=config.settle_uncertain_after_seconds),
        policy=policy,
    )


def zulip_setup(zulip: ZulipResource) -> ZulipSetup | None:
    if not zulip.is_configured:
        return None
    return ZulipSetup(
        gateway=zulip.gateway(),
        policy=zulip.retry_policy(),
        user_ttl=dt.timedelta(hours=zulip.user_cache_hours),
        unknown_user_ttl=dt.timedelta(hours=zulip.unknown_user_cache_hours),
    )


def summary_metadata(summary: NotifySummary, zulip: ZulipResource) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "mode": MetadataValue.text(summary.mode),
        "zulip": MetadataValue.text(zulip.describe()),
        **{
            status.value: MetadataValue.int(summary.counts.get(status, 0))
            for status in (OutboxStatus.SENT, OutboxStatus.SKIPPED, OutboxStatus.FAILED, OutboxStatus.DRY_RUN)
        },
        "mentors": MetadataValue.int(summary.mentors),
        "messages": MetadataValue.int(summary.messages),
        "zulip_user_lookups": MetadataValue.int(summary.zulip_user_lookups),
        "open_pairs_left": MetadataValue.int(summary.open_after),
        "open_pairs": MetadataValue.text(summary.describe_left()),
        **{f"open_pairs_{name}": MetadataValue.int(getattr(summary.left, name)) for name in OPEN_PARTS},
        "stale_claims_released": MetadataValue.int(summary.stale_released),
        "stale_claims_uncertain": MetadataValue.int(summary.stale_uncertain),
        "uncertain_found_on_zulip": MetadataValue.int(summary.uncertain_found),
        "uncertain_not_delivered": MetadataValue.int(summary.uncertain_not_delivered),
        "uncertain_unresolved": MetadataValue.int(summary.uncertain_unresolved),
    }
    # mentor notification preferences and rules (issue 12)
    if summary.left.next_due_at is not None:
        meta["next_due_at"] = MetadataValue.text(summary.left.next_due_at.isoformat())
    if summary.policy is not None:
        meta["notification_policy"] = MetadataValue.text(summary.policy)
    if summary.stopped_early:
        meta["stopped_early"] = MetadataValue.text(summary.stopped_early)
    if summary.preview:
        meta["preview"] = MetadataValue.md(preview_markdown(summary.preview))
    return meta


#: The parts of ``open_pairs_left`` in the metadata (``open_pairs_<part>``), see :class:`Backlog`.
OPEN_PARTS = (
    "takeable",
    "takeable_mentors",
    "stale_claims",
    "claimed",
    "uncertain_due",
    "uncertain_waiting",
    "held",
    "held_by_preference",  # mentor notification preferences (issue 12)
)


def preview_markdown(preview: list[dict[str, Any]]) -> str:
    """Each previewed message under a heading, its text in a fenced block (shown as written)."""
    blocks = []
    for item in preview:
        to = f" → Zulip user {item['zulip_user_id']}" if item.get("zulip_user_id") else ""
        text = str(item["message"]).replace("```", "ˋˋˋ")
        mentor = str(item["mentor"]).replace("`", "ˋ")  # an LMS username: shown as code, never as markdown
        blocks.append(f"`{mentor}`{to}: {item['status']} ({item['events']} events)\n\n```text\n{text}\n```")
    return "\n\n".join(blocks)


@op(
    name=names.NOTIFY_OP,
    out=Out(Nothing),
    description=(
        "Send open (event, mentor) pairs of lms_event_log as Zulip DMs (one message per event, or a digest), "
        "recording sent / skipped / failed / dry_run per pair."
    ),
)
def send_mentor_notifications(
    context: OpExecutionContext,
    config: NotifyConfig,
    lms: LMSResource,
    warehouse: WarehouseResource,
    settings: PipelineSettings,
    zulip: ZulipResource,
    risk: RiskSettings,
) -> None:
    if config.after_ingest_run_key:
        wait_for_ingest(context, config.after_ingest_run_key, config.wait_for_ingest_minutes)
    event_types = selected_event_types(config, settings)
    setup = zulip_setup(zulip) if settings.notify_enabled else None
    context.log.info(f"Notifying through {zulip.describe()}; event types: {', '.join(event_types) or 'none'}")
    store = warehouse.store()
    notifier = Notifier(store.outbox(), lms.reader().users, setup, run_id=context.run_id, log=context.log)
    policy = settings.notify_policy()
    request = notify_request(
        config,
        event_types,
        enabled=settings.notify_enabled,
        max_age_hours=settings.notify_max_age_hours,
        policy=policy,
    )
    context.log.info(f"Notification policy: {policy.describe()}")
    summary = notifier.run(request) if event_types else NotifySummary(mode="no event types selected")
    context.add_output_metadata(summary_metadata(summary, zulip))
    statuses = store.outbox().status_counts()
    context.log_event(
        AssetMaterialization(
            names.LMS_EVENT_LOG,
            description=summary.describe(),
            metadata={
                names.ROW_COUNT: MetadataValue.int(sum(statuses.values())),
                **{f"status_{s}": MetadataValue.int(n) for s, n in statuses.items()},
                "sent_by_this_run": MetadataValue.int(summary.counts.get(OutboxStatus.SENT, 0)),
                # The dead letter: failed pairs no automatic run retries (see the dead_letter check).
                "dead_letter": MetadataValue.int(outbox_health(store.engine, dt.datetime.now(dt.UTC)).dead_letter),
                "dead_letter_retry": MetadataValue.text(RETRY_COMMAND),
            },
        )
    )
    # students at risk: the at-risk digests that are due go out with the same run
    if settings.notify_enabled:
        from lms_activity_pipeline.defs.risk.digests import digest_metadata, risk_digests

        try:
            digests = risk_digests(context, warehouse, lms, setup, risk).run()
        except Exception as exc:  # the event notifications above are recorded: a digest problem must not fail them
            context.log.exception("at-risk digests failed; the next notify run tries again")
            context.add_output_metadata({"risk_digest_error": MetadataValue.text(f"{type(exc).__name__}: {exc}")})
        else:
            context.add_output_metadata(digest_metadata(digests))
