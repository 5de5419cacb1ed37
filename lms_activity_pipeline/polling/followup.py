"""Sensor-launched ingest runs, followed until they succeed.

The sensor's cursor moves past a change as soon as it requests the run that
ingests it. Should that run fail for good (its automatic retry failed too), the
change would wait for a manual backfill; instead the sensor keeps each request
as a :class:`PendingRun` in its cursor and, on a later tick, requests the same
window again under a new run key. Pure Python: the sensor supplies each run
key's :class:`RunState` from the Dagster instance.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from lms_activity_pipeline import names
from lms_activity_pipeline.polling.plan import PollPlan

#: A window is requested at most this many times in all; then the sensor logs it and lets go.
MAX_REQUESTS = 5
#: Requests remembered at most (the oldest waiting ones are dropped beyond this).
MAX_PENDING = 50
#: A request with no run after this many ticks was never launched (the daemon or the CLI died between
#: the tick and the launch): it is requested again, so the change is not lost.
MAX_UNSEEN_TICKS = 10


class RunState(StrEnum):
    WAITING = "waiting"  # no run with that key yet (queued in the daemon)
    RUNNING = "running"  # a run is queued/in progress, or a failed one will be retried by Dagster
    DONE = "done"  # a run with that key succeeded
    FAILED = "failed"  # every run with that key failed and none will be retried


@dataclass(frozen=True)
class PendingRun:
    """The window of one requested ingest run, enough to request it again."""

    run_key: str
    first_partition: str
    last_partition: str
    since: str | None  # ISO-8601, as kept in the cursor
    until: str | None
    rows: int
    requests: int = 1
    unseen_ticks: int = 0

    @classmethod
    def of(cls, plan: PollPlan) -> PendingRun:
        iso = lambda t: None if t is None else t.isoformat()  # noqa: E731
        return cls(
            plan.run_key,
            plan.first_partition,
            plan.last_partition,
            iso(plan.changed_since),
            iso(plan.changed_until),
            plan.rows,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingRun:
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def again(self) -> PendingRun:
        """The same window under a new run key (``<first key>-again<N>``)."""
        base = self.run_key.split("-again", 1)[0]
        return replace(self, run_key=f"{base}-again{self.requests}", requests=self.requests + 1, unseen_ticks=0)

    @property
    def changed_since(self) -> dt.datetime | None:
        """As :attr:`PollPlan.changed_since`."""
        return None if self.since is None else dt.datetime.fromisoformat(self.since)

    @property
    def changed_until(self) -> dt.datetime | None:
        return None if self.until is None else dt.datetime.fromisoformat(self.until)

    @property
    def is_full_history(self) -> bool:
        """As :attr:`PollPlan.is_full_history`."""
        return self.since is None and self.until is None

    def run_tags(self) -> dict[str, str]:
        """As :meth:`PollPlan.run_tags`."""
        return {names.CHANGED_ROWS_TAG: str(self.rows)}

    def describe(self) -> str:
        days = (
            self.first_partition
            if self.first_partition == self.last_partition
            else f"{self.first_partition}..{self.last_partition}"
        )
        return f"{days} ({self.rows} changed rows, run key {self.run_key})"


@dataclass(frozen=True)
class Review:
    """What became of the pending requests: still open, to request again, abandoned (the rest succeeded)."""

    waiting: list[PendingRun]
    again: list[PendingRun]
    given_up: list[PendingRun]

    @property
    def pending(self) -> list[PendingRun]:
        return (self.waiting + self.again)[-MAX_PENDING:]


def review(pending: Sequence[PendingRun], state_of: Callable[[str], RunState]) -> Review:
    """Sort the pending requests by the state of their runs."""
    waiting: list[PendingRun] = []
    again: list[PendingRun] = []
    given_up: list[PendingRun] = []
    for item in pending:
        state = state_of(item.run_key)
        if state is RunState.DONE:
            continue
        if state is RunState.WAITING and item.unseen_ticks < MAX_UNSEEN_TICKS:
            waiting.append(replace(item, unseen_ticks=item.unseen_ticks + 1))
        elif state is RunState.RUNNING:
            waiting.append(replace(item, unseen_ticks=0))
        elif item.requests >= MAX_REQUESTS:
            given_up.append(item)
        else:
            again.append(item.again())
    return Review(waiting, again, given_up)
