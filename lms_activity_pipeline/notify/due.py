"""Whether a notify run would have anything to do: the one check the sensors, the schedule and the CLI ask."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from lms_activity_pipeline.notify.notifier import NotifyRequest
from lms_activity_pipeline.warehouse.outbox import Outbox, Selection


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
