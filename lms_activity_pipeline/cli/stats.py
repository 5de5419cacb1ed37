"""``lms-activity monitor --stats``: what the warehouse, the LMS and the Dagster instance say, in one record."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from dagster import DagsterInstance, RunsFilter

from lms_activity_pipeline import names
from lms_activity_pipeline.lms.reader import LMSReader
from lms_activity_pipeline.warehouse.freshness import Freshness, freshness
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


def collect(reader: LMSReader, store: Warehouse, instance: DagsterInstance, now: dt.datetime | None = None) -> Stats:
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
