"""What one notify run may do (:class:`NotifyRequest`), and whether a run would have anything to do now:
the one check the sensors, the schedule and the CLI ask before starting one."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from lms_activity_pipeline.notify.policy import Decision, NotifyPolicy, decide
from lms_activity_pipeline.warehouse.outbox import Backlog, Outbox, Selection
from lms_activity_pipeline.warehouse.preferences import PreferenceStore


@dataclass(frozen=True)
class NotifyRequest:
    """What one run may do."""

    selection: Selection = field(default_factory=Selection)
    enabled: bool = True
    max_age: dt.timedelta = dt.timedelta(hours=24)
    claim_timeout: dt.timedelta = dt.timedelta(minutes=30)
    #: After this long the run starts no new mentor (the one in hand is finished); the rest waits
    #: for the next run. Below ``claim_timeout`` by default.
    time_budget: dt.timedelta = dt.timedelta(minutes=20)
    breaker_threshold: int = 3
    #: An uncertain delivery is looked up on Zulip once its request is this old (a request
    #: that timed out may still be in progress on the server until then).
    settle_after: dt.timedelta = dt.timedelta(minutes=2)
    #: Mentors' preferences and the rules (issue 12); ``None``: every takeable pair is due.
    policy: NotifyPolicy | None = None

    def __post_init__(self) -> None:
        if self.time_budget <= dt.timedelta(0):
            raise ValueError(f"the time budget must be positive, got {self.time_budget}")

    def backlog(self, outbox: Outbox, now: dt.datetime) -> Backlog:
        """The outbox's open pairs as this request sees them (:attr:`Backlog.due`: would a run do anything?).

        Pairs held by a mentor's preference are not due until their time (``held_by_preference``,
        ``next_due_at``)."""
        backlog = outbox.backlog(self.selection, now, self.claim_timeout, self.settle_after)
        decision = self.decide(outbox, now)
        if decision is None:
            return backlog
        return dataclasses.replace(
            backlog,
            takeable=decision.takeable,
            takeable_mentors=decision.takeable_mentors,
            held_by_preference=decision.held,
            next_due_at=decision.next_due_at,
        )

    def decide(self, outbox: Outbox, now: dt.datetime) -> Decision | None:
        """What preferences and rules make of the takeable pairs now (``None``: none in force, all due)."""
        if self.policy is None or not self.policy.in_force(PreferenceStore(outbox.engine)):
            return None
        hours = self.max_age.total_seconds() / 3600
        return decide(
            outbox,
            self.policy,
            self.selection,
            now,
            too_old_before=now - self.max_age,
            too_old_reason=f"event older than LMS_NOTIFY_MAX_AGE_HOURS={hours:g} when sending",
        )


def why_no_run(
    outbox: Outbox,
    *,
    enabled: bool,
    event_types: Sequence[str],
    max_age_hours: float,
    now: dt.datetime,
    policy: NotifyPolicy | None = None,
) -> str | None:
    """Why a notify run launched now with the default op config would have nothing to do (``None``: one is
    due: pairs to send, claims of a stopped run to recover, uncertain deliveries to look up on Zulip)."""
    if not enabled:
        return "mentor notifications are disabled (LMS_NOTIFY_MENTORS_ENABLED=false)"
    request = NotifyRequest(
        selection=Selection(tuple(event_types)), max_age=dt.timedelta(hours=max_age_hours), policy=policy
    )
    backlog = request.backlog(outbox, now)
    return None if backlog.due else f"nothing due: {backlog.describe(request.settle_after)}"
