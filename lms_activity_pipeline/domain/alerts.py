"""Operational alerts: incidents, their dedup keys, open/resolve transitions and the hourly cap (pure).

An :class:`Alert` is what a check sees wrong *now*, named by a dedup ``key`` (one incident per key:
``run_failed:<job>:<window>``, ``backlog``, ``lag``, ``sensor_errors:<sensor>``, ``mentor_failing:<id>``,
``uncertain_unsettled``, ``dead_letter``). :func:`plan_alerts` compares what is wrong now with the stored
incidents and says which "opened" and "resolved" messages to send: one when an incident opens, one when
it clears, never one per check. Messages beyond :data:`DEFAULT_ALERTS_PER_HOUR` in the last hour are held
(and sent by a later evaluation while the incident lasts); a resolve of an incident whose opening was
never sent is not sent either.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

#: Messages (openings and resolutions together) sent to the alert channel per rolling hour at most.
DEFAULT_ALERTS_PER_HOUR = 10
#: Longest one-line error quoted in an alert.
MAX_ERROR_LENGTH = 300
HOUR = dt.timedelta(hours=1)


class IncidentStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Alert:
    """Something wrong now: ``key`` names the incident, the rest is the message."""

    key: str
    title: str
    detail: str = ""
    action: str = ""
    link: str | None = None
    #: Incidents of kinds listed in an evaluation's scope are resolved when they are no longer seen.
    kind: str = ""

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", kind_of(self.key))


def kind_of(key: str) -> str:
    """The incident kind of a dedup key: the part before the first ``:``."""
    return key.split(":", 1)[0]


@dataclass(frozen=True)
class Incident:
    """An incident as stored: open or resolved, and whether its messages went out."""

    key: str
    status: IncidentStatus
    title: str
    opened_at: dt.datetime
    #: When the "opened" message was sent (``None``: held by the cap, Zulip down, or not yet).
    notified_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    resolve_notified_at: dt.datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.status is IncidentStatus.OPEN


class MessageKind(StrEnum):
    OPENED = "opened"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Outgoing:
    """One message to send for an incident."""

    key: str
    kind: MessageKind
    text: str


@dataclass(frozen=True)
class AlertPlan:
    """What an evaluation does: incidents to open and resolve (stored whatever happens to the messages),
    messages to send now, and messages held back by the hourly cap."""

    to_open: tuple[Alert, ...] = ()
    to_resolve: tuple[str, ...] = ()
    send: tuple[Outgoing, ...] = ()
    held: tuple[Outgoing, ...] = ()

    @property
    def idle(self) -> bool:
        return not (self.to_open or self.to_resolve or self.send or self.held)


def plan_alerts(
    active: Sequence[Alert],
    incidents: Mapping[str, Incident],
    *,
    scope: Collection[str],
    sent_last_hour: int,
    now: dt.datetime,
    per_hour: int = DEFAULT_ALERTS_PER_HOUR,
) -> AlertPlan:
    """Compare what is wrong now (``active``) with the stored ``incidents``.

    ``scope``: the incident kinds (or single keys) this evaluation checked; an open incident of such a
    kind that is not in ``active`` has cleared. Openings not sent yet (the cap, Zulip down) are sent again while
    the incident is open. ``sent_last_hour``: messages already sent in the hour before ``now``.
    """
    checked = set(scope)
    seen: dict[str, Alert] = {}
    for alert in active:
        seen.setdefault(alert.key, alert)
    to_open = tuple(a for k, a in seen.items() if k not in incidents or not incidents[k].is_open)
    to_resolve = tuple(
        sorted(k for k, i in incidents.items() if i.is_open and {kind_of(k), k} & checked and k not in seen)
    )
    wanted: list[Outgoing] = []
    # Resolutions: those of this evaluation, and earlier ones whose message has not gone out yet.
    unsent = sorted(
        k
        for k, i in incidents.items()
        if not i.is_open and i.notified_at is not None and i.resolve_notified_at is None and k not in seen
    )
    for key in (*to_resolve, *unsent):
        stored = incidents[key]
        if stored.notified_at is not None:  # nobody was told it opened: no news that it closed
            wanted.append(Outgoing(key, MessageKind.RESOLVED, render_resolved(stored, now)))
    for alert in seen.values():
        known = incidents.get(alert.key)
        if known is None or not known.is_open or known.notified_at is None:
            wanted.append(Outgoing(alert.key, MessageKind.OPENED, render_opened(alert)))
    room = max(per_hour - sent_last_hour, 0)
    return AlertPlan(to_open, to_resolve, tuple(wanted[:room]), tuple(wanted[room:]))


def render_opened(alert: Alert) -> str:
    """The channel message of a new incident: title, detail, what to do, link."""
    lines = [f":warning: **{alert.title}**"]
    if alert.detail:
        lines.append(alert.detail)
    if alert.action:
        lines.append(f"What to do: {alert.action}")
    if alert.link:
        lines.append(alert.link)
    lines.append(f"(alert `{alert.key}`; one more message when it clears)")
    return "\n".join(lines)


def render_resolved(incident: Incident, now: dt.datetime) -> str:
    minutes = max((now - incident.opened_at).total_seconds(), 0) / 60
    return f":check: Resolved: **{incident.title}** (open {minutes:.0f} min; alert `{incident.key}`)"


def one_line(error: object, max_length: int = MAX_ERROR_LENGTH) -> str:
    """An error as one line of plain text in an inline code span (Zulip renders nothing inside it)."""
    text = " ".join(str(error or "").split()) or "no error message"
    if len(text) > max_length:
        text = text[: max_length - 1] + "…"
    fence = "`" * (max(_backtick_runs(text), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _backtick_runs(text: str) -> list[int]:
    runs, current = [], 0
    for char in text:
        if char == "`":
            current += 1
        elif current:
            runs.append(current)
            current = 0
    if current:
        runs.append(current)
    return runs


# --- failed runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRetries:
    """Dagster's run retries as the instance is configured (``run_retries`` in dagster.yaml)."""

    enabled: bool
    max_retries: int


def will_be_retried(tags: Mapping[str, str], retries: RunRetries) -> bool:
    """Will Dagster retry this failed run? Its ``dagster/will_retry`` tag when set, else its
    ``dagster/retry_number`` against ``dagster/max_retries`` (or the instance's ``max_retries``)."""
    flag = tags.get("dagster/will_retry")
    if flag is not None:
        return flag.strip().lower() == "true"
    if not retries.enabled:
        return False
    try:
        limit = int(tags.get("dagster/max_retries", retries.max_retries))
        number = int(tags.get("dagster/retry_number", 0))
    except ValueError:
        return False
    return number < limit


def partition_window(tags: Mapping[str, str]) -> str:
    """The days a run covered, from its partition tags (``all`` when it had none)."""
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if start and end:
        return start if start == end else f"{start}..{end}"
    return tags.get("dagster/partition") or "all"


@dataclass(frozen=True)
class FailedRun:
    """What an alert about a failed run says."""

    job: str
    run_id: str
    window: str
    step: str | None
    error: str


#: How alerts name Dagster's implicit asset job (what the UI runs for a materialisation or a backfill).
JOB_LABELS = {"__ASSET_JOB": "Asset materialisation (UI or backfill)"}


def run_failed_key(job: str, window: str) -> str:
    """One incident per job and window: a retry that fails again is the same incident."""
    return f"run_failed:{job}:{window}"


def run_failure_alert(run: FailedRun, ui_url: str) -> Alert:
    step = f" in step `{run.step}`" if run.step else ""
    return Alert(
        key=run_failed_key(run.job, run.window),
        title=f"{JOB_LABELS.get(run.job, run.job)} failed for good ({run.window})",
        detail=f"Run {run.run_id[:8]} failed{step} after Dagster's retries: {one_line(run.error)}",
        action=(
            "read the run's logs, fix the cause, then re-execute the run from the UI (the upserts make it safe); "
            "the sensor requests a failed ingest window again by itself"
        ),
        link=f"{ui_url.rstrip('/')}/runs/{run.run_id}",
    )


# --- health checks ----------------------------------------------------------------------------------

#: The incident kinds :func:`health_alerts` decides (an evaluation of the health checks resolves them).
HEALTH_KINDS = ("backlog", "lag", "sensor_errors", "mentor_failing", "uncertain_unsettled")
#: Consecutive failed ticks of a sensor before it is an incident.
SENSOR_ERROR_TICKS = 3
RETRY_COMMAND = "lms-activity monitor --process-pending"


@dataclass(frozen=True)
class HealthFacts:
    """What the checks read (from the outbox, the LMS and the Dagster instance)."""

    pending: int = 0
    pending_minutes: float = 0.0
    unsettled_uncertain: int = 0
    #: (mentor id, failed pairs, last error) of mentors whose DMs keep failing.
    failing_mentors: tuple[tuple[int, int, str | None], ...] = ()
    #: The warehouse's lag behind LMS changes, in minutes (``None``: not measured).
    lag_minutes: float | None = None
    #: Sensor name -> (consecutive failed or erroring ticks, the last error).
    sensor_errors: Mapping[str, tuple[int, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Thresholds:
    """``LMS_ALERT_LAG_MINUTES`` and ``LMS_ALERT_BACKLOG_MINUTES`` (0: that check is off)."""

    lag_minutes: float = 30.0
    backlog_minutes: float = 60.0
    sensor_error_ticks: int = SENSOR_ERROR_TICKS


def health_alerts(facts: HealthFacts, limits: Thresholds, ui_url: str) -> list[Alert]:
    """The incidents the facts show now (one per key)."""
    ui = ui_url.rstrip("/")
    alerts: list[Alert] = []
    if limits.backlog_minutes > 0 and facts.pending and facts.pending_minutes > limits.backlog_minutes:
        alerts.append(
            Alert(
                "backlog",
                "Mentor notifications are waiting",
                f"{facts.pending} pair(s) pending in lms_event_log, the oldest for {facts.pending_minutes:.0f} min "
                f"(LMS_ALERT_BACKLOG_MINUTES={limits.backlog_minutes:g}).",
                "check that notify_mentors_after_ingest and notify_mentors_retry_schedule are running and that "
                f"notify_mentors_job runs succeed; `{RETRY_COMMAND}` sends them now",
                f"{ui}/jobs/notify_mentors_job",
            )
        )
    if limits.lag_minutes > 0 and facts.lag_minutes is not None and facts.lag_minutes > limits.lag_minutes:
        alerts.append(
            Alert(
                "lag",
                "The warehouse is behind the LMS",
                f"The oldest LMS change not in lms_activity_events is {facts.lag_minutes:.0f} min old "
                f"(LMS_ALERT_LAG_MINUTES={limits.lag_minutes:g}).",
                "check lms_activity_sensor's ticks and the latest lms_ingest_job runs; "
                "`lms-activity monitor --stats` shows the lag",
                f"{ui}/automation",
            )
        )
    for sensor, (ticks, error) in sorted(facts.sensor_errors.items()):
        if ticks >= limits.sensor_error_ticks:
            alerts.append(
                Alert(
                    f"sensor_errors:{sensor}",
                    f"Sensor {sensor} keeps failing",
                    f"{ticks} ticks in a row failed; the last: {one_line(error)}",
                    "read the tick's error in the UI (Automation); a database or LMS outage clears by itself, "
                    "a configuration error needs a fix and a reload of the code location",
                    f"{ui}/automation",
                )
            )
    for mentor_id, failed, last in facts.failing_mentors:
        alerts.append(
            Alert(
                f"mentor_failing:{mentor_id}",
                f"DMs to mentor {mentor_id} keep failing",
                f"{failed} notification(s) failed with no DM delivered since; the last error: {one_line(last)}",
                f"check the mentor's Zulip account (e-mail in the LMS, deactivated?) and the bot; then `{RETRY_COMMAND}`",
            )
        )
    if facts.unsettled_uncertain:
        alerts.append(
            Alert(
                "uncertain_unsettled",
                "Deliveries of unknown outcome cannot be settled",
                f"{facts.unsettled_uncertain} pair(s) may or may not have reached their mentor and Zulip cannot "
                "tell (nothing to look up, or the lookups kept failing for a day).",
                "look for the DMs on Zulip; then either leave them (final) or resend with "
                f"`{RETRY_COMMAND}` (it may duplicate a DM)",
            )
        )
    return alerts
