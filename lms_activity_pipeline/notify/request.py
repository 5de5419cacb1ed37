"""What one notify run may do (:class:`NotifyRequest`), and whether a run would have anything to do now:
the one check the sensors, the schedule and the CLI ask before starting one."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from lms_activity_pipeline.warehouse.outbox import Backlog, Outbox, Selection


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

    def __post_init__(self) -> None:
        if self.time_budget <= dt.timedelta(0):
            raise ValueError(f"the time budget must be positive, got {self.time_budget}")

    def backlog(self, outbox: Outbox, now: dt.datetime) -> Backlog:
        """The outbox's open pairs as this request sees them (:attr:`Backlog.due`: would a run do anything?)."""
        return outbox.backlog(self.selection, now, self.claim_timeout, self.settle_after)


def why_no_run(
    outbox: Outbox, *, enabled: bool, event_types: Sequence[str], max_age_hours: float, now: dt.datetime
) -> str | None:
    """Why a notify run launched now with the default op config would have nothing to do (``None``: one is
    due: pairs to send, claims of a stopped run to recover, uncertain deliveries to look up on Zulip)."""
    if not enabled:
        return "mentor notifications are disabled (LMS_NOTIFY_MENTORS_ENABLED=false)"
    request = NotifyRequest(selection=Selection(tuple(event_types)), max_age=dt.timedelta(hours=max_age_hours))
    backlog = request.backlog(outbox, now)
    return None if backlog.due else f"nothing due: {backlog.describe(request.settle_after)}"
