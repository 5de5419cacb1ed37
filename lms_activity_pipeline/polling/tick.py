"""One tick of the LMS poll: follow the runs requested before, plan the next one, save the shared cursor.

The Dagster sensor ``lms_activity_sensor`` is this function plus turning its plans into run requests;
``lms-activity monitor`` evaluates that same sensor. Both keep their state in the warehouse table
``lms_monitor_state`` (:mod:`lms_activity_pipeline.warehouse.poll_state`), so the UI's sensor and the
CLI continue each other's work: what one ingested, the other never requests again.

The cursor (JSON) holds the plan's marks (:class:`~lms_activity_pipeline.polling.plan.Cursor`) and,
under ``_pending``, the runs requested and followed until one succeeds
(:mod:`~lms_activity_pipeline.polling.followup`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.polling.followup import PendingRun, Review, RunState, review
from lms_activity_pipeline.polling.plan import ChangeSource, Cursor, PollPlan, PollResult, plan_announced, plan_poll
from lms_activity_pipeline.warehouse import poll_state, webhook_inbox
from lms_activity_pipeline.warehouse.freshness import STAGED, reached_events
from lms_activity_pipeline.warehouse.store import Warehouse

#: Where the cursor keeps the runs it requested and follows.
PENDING_KEY = "_pending"


@dataclass(frozen=True)
class PollConfig:
    """What a poll needs to know besides the LMS and the warehouse."""

    timezone: str
    partitions_start: str
    lookback: dt.timedelta


@dataclass(frozen=True)
class Tick:
    """What one tick decided: the ingest runs to request and why, and what to report."""

    #: Ingest runs to request now: windows whose runs failed for good (again), then the new change.
    requests: list[PollPlan | PendingRun]
    result: PollResult | None
    followed: Review
    cursor: str
    #: Requested runs followed from now on (those of earlier ticks still open, and ``requests``).
    pending: list[PendingRun] = field(default_factory=list)
    #: False when another poller saved the cursor between our read and our write: request nothing.
    saved: bool = True
    messages: list[str] = field(default_factory=list)
    #: LMS webhook announcements this tick consumed (their rows are in ``requests``, or stored already).
    announced: int = 0

    def skip_reason(self) -> str:
        """Why the tick requests no run, in one line."""
        if not self.saved:
            return "another poll (the sensor or lms-activity monitor) saved the cursor first; it requests what changed"
        reason = (self.result.skip_reason if self.result else None) or "nothing to request"
        waiting = f"; {len(self.pending)} requested run(s) not finished yet" if self.pending else ""
        return reason + waiting + "".join(f"; {line}" for line in self.warnings())

    def warnings(self) -> list[str]:
        return self.result.warnings() if self.result else []


def read_pending(cursor: str | None) -> list[PendingRun]:
    try:
        return [PendingRun.from_json(p) for p in json.loads(cursor or "{}").get(PENDING_KEY, [])]
    except (ValueError, TypeError, AttributeError):
        return []


def cursor_text(marks: Cursor, pending: list[PendingRun]) -> str:
    data = json.loads(marks.to_json())
    if pending:
        data[PENDING_KEY] = [p.to_json() for p in pending]
    return json.dumps(data)


def poll(
    source: ChangeSource,
    store: Warehouse,
    state_of: Callable[[str], RunState],
    config: PollConfig,
    *,
    legacy_cursor: str | None = None,
    now: dt.datetime | None = None,
) -> Tick:
    """One tick: review the followed runs (``state_of`` a run key), plan, and save the cursor.

    ``legacy_cursor``: a cursor kept elsewhere before the state moved to the warehouse (the sensor's own
    Dagster cursor); used once, when the warehouse holds none.
    """
    now = now or dt.datetime.now(dt.UTC)
    stored = poll_state.read_state(store.engine)
    current = stored.cursor
    if current is None:  # state kept elsewhere before: the CLI's own row, or the sensor's Dagster cursor
        current = poll_state.read_state(store.engine, poll_state.LEGACY_CLI_POLLER).cursor or legacy_cursor
    followed = review(read_pending(current), state_of)
    messages = [f"ingest run failed for good; requesting {item.describe()} again" for item in followed.again]
    messages += [
        f"ingest of {item.describe()} failed {item.requests} times; backfill those days" for item in followed.given_up
    ]
    result = plan_poll(
        source,
        Cursor.from_json(current),
        timezone=config.timezone,
        partitions_start=config.partitions_start,
        lookback=config.lookback,
        now=now,
    )
    requests: list[PollPlan | PendingRun] = list(followed.again)
    pending = followed.pending
    if result.plan is not None:
        requests.append(result.plan)
        pending = [*pending, PendingRun.of(result.plan)]
    announced, inbox = _announced(source, store, result, config, now)
    if announced is not None:
        requests.append(announced)
        pending = [*pending, PendingRun.of(announced)]
        messages.append(f"LMS webhooks announced rows the poll would not read: {announced.describe()}")
    text = cursor_text(result.cursor, pending)
    outcome = "; ".join(p.describe() for p in requests) if requests else (result.skip_reason or "no change")
    run_key = requests[-1].run_key if requests else None
    saved = poll_state.save_state(store.engine, stored, text, outcome, run_key, now)
    if not saved:
        return Tick([], result, followed, text, saved=False)
    if inbox:  # handed to the run requested now, or already in the events (or not in the LMS at all)
        webhook_inbox.consume(store.engine, inbox, announced.run_key if announced else None, now)
    return Tick(requests, result, followed, text, pending, messages=messages, announced=len(inbox))


def _announced(
    source: ChangeSource, store: Warehouse, result: PollResult, config: PollConfig, now: dt.datetime
) -> tuple[PollPlan | None, list[str]]:
    """The run for rows announced by LMS webhooks (``lms_webhook_inbox``) that neither the events hold in
    that version nor this poll's plan covers, and the announcements this tick consumes."""
    waiting = webhook_inbox.pending(store.engine)
    if not waiting:
        return None, []
    frames = []
    for logical, table in STAGED.items():
        ids = sorted({a.row_id for a in waiting if a.source == logical})
        if not ids:
            continue
        rows, _unreadable = source.rows_by_id(logical, ids)  # unreadable rows are reported by the poll itself
        if rows.empty:
            continue
        with store.engine.connect() as conn:
            there = {
                (int(i), pd.Timestamp(to_utc(at)))
                for i, at in conn.execute(
                    sa.select(table.c.id, table.c.updated_at).where(table.c.id.in_(ids), reached_events(table))
                )
            }
        fresh = [(int(i), at) not in there for i, at in zip(rows["id"], rows["updated_at"], strict=True)]
        frames.append(rows[fresh].assign(source=logical))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    plan = plan_announced(
        rows,
        result.plan,
        result.cursor,
        timezone=config.timezone,
        partitions_start=config.partitions_start,
        now=now,
    )
    return plan, [a.webhook_id for a in waiting]
