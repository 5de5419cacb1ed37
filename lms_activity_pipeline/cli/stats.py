"""``lms-activity monitor --stats``: what the warehouse, the LMS and the Dagster instance say, and how it is printed."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from dagster import DagsterInstance, RunsFilter

from lms_activity_pipeline import names
from lms_activity_pipeline.domain.alerts import RETRY_COMMAND
from lms_activity_pipeline.lms.reader import LMSReader
from lms_activity_pipeline.notify.request import NotifyRequest
from lms_activity_pipeline.warehouse.freshness import Freshness, freshness
from lms_activity_pipeline.warehouse.health import OutboxHealth, outbox_health
from lms_activity_pipeline.warehouse.outbox import Backlog
from lms_activity_pipeline.warehouse.poll_state import PollState, read_state
from lms_activity_pipeline.warehouse.stats import EventStats, event_stats
from lms_activity_pipeline.warehouse.store import Warehouse


@dataclass(frozen=True)
class Stats:
    events: EventStats
    #: The lag is read from the data, not a cursor: right whoever ingests (the sensor, the CLI, a backfill).
    freshness: Freshness
    lms_newest_change: dt.datetime | None
    poll: PollState
    last_ingest: dict[str, Any] | None
    #: The outbox's backlog age and dead letter (None: not read).
    outbox: OutboxHealth | None = None
    #: Open pairs as a notify run would see them now, held ones with their due time (issue 12).
    backlog: Backlog | None = None


def collect(
    reader: LMSReader,
    store: Warehouse,
    instance: DagsterInstance,
    now: dt.datetime | None = None,
    request: NotifyRequest | None = None,
) -> Stats:
    now = now or dt.datetime.now(dt.UTC)
    fresh = freshness(reader, store.engine)
    marks = reader.high_water_marks(fresh.lms_now)
    last = instance.get_run_records(RunsFilter(job_name=names.INGEST_JOB), limit=1)
    return Stats(
        events=event_stats(store.engine, now),
        freshness=fresh,
        lms_newest_change=max((v for v in marks.values() if v is not None), default=None),
        poll=read_state(store.engine),
        last_ingest=_run_summary(last[0]) if last else None,
        outbox=outbox_health(store.engine, now),
        backlog=None if request is None else request.backlog(store.outbox(), now),
    )


def _run_summary(record: Any) -> dict[str, Any]:
    """When the newest ingest run started, who launched it and how it ended."""
    run = record.dagster_run
    started = record.start_time or record.create_timestamp.timestamp()
    trigger = run.tags.get(names.TRIGGER_TAG) or ("backfill" if run.tags.get(names.BACKFILL_TAG) else "manual")
    return {
        "run_id": run.run_id,
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC),
        "trigger": trigger,
        "status": run.status.value,
    }


def print_event_counts(events: EventStats) -> None:
    from tabulate import tabulate

    rows: list[tuple[Any, ...]] = [(t, events.total[t], events.last_24h[t]) for t in events.total]
    rows.append(("total", sum(events.total.values()), sum(events.last_24h.values())))
    print(tabulate(rows, headers=["event type", "events", "last 24 h"], tablefmt="simple"))


def print_stats(stats: Stats) -> None:
    print_event_counts(stats.events)
    fresh, lag = stats.freshness, stats.freshness.lag_seconds
    print(f"newest event:       {stats.events.newest_event or '-'}")
    print(f"newest LMS change:  {stats.lms_newest_change or '-'}")
    pending = f" (oldest LMS change not in lms_activity_events: {fresh.oldest_pending})" if lag else ""
    print(f"lag behind LMS:     {'-' if lag is None else f'{lag:.0f} s'}{pending}")
    if fresh.staged_pending:
        print(
            f"not in events yet:  {fresh.staged_pending} staged rows "
            f"({fresh.staged_rejected} rejected by lms_activity_events, the rest not classified yet)"
        )
    if fresh.future_rows:
        ahead = fresh.future_ahead.total_seconds() if fresh.future_ahead is not None else 0
        print(
            f"rows from future:   {fresh.future_rows} LMS rows dated after the LMS's now(), up to {ahead:.0f} s ahead "
            f"({fresh.future_pending} not in events yet)"
        )
    print("notifications:      " + ", ".join(f"{k} {v}" for k, v in stats.events.notifications.items()))
    if stats.outbox is not None:
        print_outbox_health(stats.outbox)
    if stats.backlog is not None:
        print(f"open pairs:         {stats.backlog.describe()}")
    poll = stats.poll
    print(f"last poll:          {poll.last_poll_at or 'never'} ({poll.last_outcome or '-'})")
    last = stats.last_ingest
    described = (
        f"{last['started_at']} by {last['trigger']} (run {last['run_id']}, {last['status']})" if last else "never"
    )
    print(f"last ingest run:    {described}")


def print_outbox_health(health: OutboxHealth) -> None:
    """The oldest pending pair and the dead letter (failed pairs no automatic run retries)."""
    if health.oldest_pending_at is not None:
        print(f"oldest pending:     {health.oldest_pending_at} ({health.pending} pending)")
    dead = f"{health.dead_letter} pairs of {health.dead_letter_mentors} mentors"
    retry = f" (not retried automatically; after a fix: {RETRY_COMMAND})" if health.dead_letter else ""
    print(f"dead letter:        {dead}{retry}")
