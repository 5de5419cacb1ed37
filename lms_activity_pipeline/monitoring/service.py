"""What ``lms-activity monitor`` does: polls (the sensor's logic) turned into recorded Dagster runs."""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus, Definitions, RunsFilter

from lms_activity_pipeline import db
from lms_activity_pipeline.config import Settings
from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES
from lms_activity_pipeline.jobs import INGEST_JOB_NAME
from lms_activity_pipeline.monitoring.freshness import freshness
from lms_activity_pipeline.monitoring.poll import Cursor, PollPlan, plan_poll
from lms_activity_pipeline.ops.notify import why_no_run
from lms_activity_pipeline.resources.factory import build_resources
from lms_activity_pipeline.resources.lms import LMSResource
from lms_activity_pipeline.resources.settings import PipelineSettings
from lms_activity_pipeline.resources.warehouse import WarehouseResource
from lms_activity_pipeline.resources.zulip import ZulipResource
from lms_activity_pipeline.runner import INGEST_ASSETS, run_ingest, run_notify
from lms_activity_pipeline.timeutil import to_utc
from lms_activity_pipeline.warehouse import schema as wh

STATE_NAME = "cli"


@dataclass(frozen=True)
class NotifyOutcome:
    """One ``notify_mentors_job`` run: its id, whether it succeeded, the op's metadata."""

    run_id: str
    success: bool
    summary: dict[str, Any]


@dataclass(frozen=True)
class PollOutcome:
    """The result of one ``monitor`` poll, for printing."""

    plan: PollPlan | None
    message: str
    run_id: str | None = None
    success: bool = True
    events: dict[str, Any] | None = None
    notify: NotifyOutcome | None = None
    #: What the poll saw that needs saying (rows dated in the future, unreadable rows).
    warnings: tuple[str, ...] = ()
    #: Rows each ingest step rejected (``rows_rejected`` of its materialisation).
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def all_succeeded(self) -> bool:
        return self.success and (self.notify is None or self.notify.success)


class Monitor:
    """Polls the LMS with the sensor's :func:`plan_poll` and runs ``lms_ingest_job`` in-process.

    Its cursor lives in the warehouse table ``lms_monitor_state``; every run is
    a Dagster run in ``instance``, tagged with the sensor's run key so the same
    change is never ingested twice.
    """

    def __init__(
        self,
        settings: Settings,
        defs: Definitions,
        instance: DagsterInstance,
        run_config: dict[str, Any] | None = None,
        resources: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.defs = defs
        self.instance = instance
        self.run_config = run_config or {}
        resources = resources or build_resources(settings, env_vars=False)
        self.lms: LMSResource = resources["lms"]
        self.warehouse: WarehouseResource = resources["warehouse"]
        self.zulip: ZulipResource = resources["zulip"]
        self.pipeline_settings: PipelineSettings = resources["settings"]
        self.lookback = dt.timedelta(seconds=self.pipeline_settings.lookback_seconds)

    # state -----------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        table = wh.lms_monitor_state
        with self.warehouse.engine.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.name == STATE_NAME)).mappings().first()
        return dict(row) if row else {}

    def _save_state(self, cursor: Cursor | None, run_id: str | None, status: str | None) -> None:
        table = wh.lms_monitor_state
        values: dict[str, Any] = {"last_poll_at": dt.datetime.now(dt.UTC)}
        if cursor is not None:
            values["cursor"] = cursor.to_json()
        if run_id is not None:
            values.update(last_run_id=run_id, last_run_status=status)
        with db.write_transaction(self.warehouse.engine) as conn:
            updated = conn.execute(table.update().where(table.c.name == STATE_NAME).values(**values)).rowcount
            if not updated:
                conn.execute(table.insert().values(name=STATE_NAME, **values))

    def _already_ran(self, run_key: str) -> str | None:
        runs = self.instance.get_runs(
            RunsFilter(tags={"dagster/run_key": run_key}, statuses=[DagsterRunStatus.SUCCESS]), limit=1
        )
        return runs[0].run_id if runs else None

    # polling -----------------------------------------------------------------
    def poll_once(self) -> PollOutcome:
        """One poll: plan, run the ingest if anything changed, advance the cursor on success."""
        cursor = Cursor.from_json(self._state().get("cursor"))
        result = plan_poll(
            self.lms,
            cursor,
            timezone=self.settings.timezone,
            partitions_start=self.settings.partitions_start,
            lookback=self.lookback,
        )
        plan, warnings = result.plan, tuple(result.warnings())
        if plan is None:
            self._save_state(result.cursor, None, None)
            return PollOutcome(
                None, result.skip_reason or "nothing changed", notify=self._notify_if_due(), warnings=warnings
            )
        previous = self._already_ran(plan.run_key)
        if previous:
            self._save_state(result.cursor, previous, "SUCCESS")
            message = f"{plan.describe()}: already ingested by run {previous}"
            return PollOutcome(plan, message, previous, notify=self._notify_if_due(), warnings=warnings)
        run = run_ingest(
            self.defs,
            self.instance,
            plan.first_partition,
            plan.last_partition,
            changed_since=plan.changed_since,
            changed_until=plan.changed_until,
            tags={"dagster/run_key": plan.run_key, "lms/trigger": "cli", **plan.run_tags()},
            run_config=self.run_config,
            raise_on_error=False,
        )
        status = "SUCCESS" if run.success else "FAILURE"
        # The cursor only moves past changes that were stored.
        self._save_state(result.cursor if run.success else None, run.run_id, status)
        events = _materialization(run, "lms_activity_events")
        rejected = {asset: int(meta.get("rows_rejected", 0)) for asset in INGEST_ASSETS if (meta := _materialization(run, asset))}
        notify = self.notify() if run.success else None
        return PollOutcome(plan, plan.describe(), run.run_id, run.success, events, notify, warnings, rejected)

    # notifications -------------------------------------------------------------
    def notify(self, event_types: tuple[str, ...] | None = None, *, retry_all_failed: bool = False) -> NotifyOutcome:
        """One ``notify_mentors_job`` run in the instance (``retry_all_failed``: what --process-pending does)."""
        run = run_notify(
            self.defs,
            self.instance,
            event_types=event_types,
            retry_all_failed=retry_all_failed,
            tags={"lms/trigger": "cli-process-pending" if retry_all_failed else "cli"},
            run_config=self.run_config,
            raise_on_error=False,
        )
        return NotifyOutcome(run.run_id, run.success, _op_metadata(run, "send_mentor_notifications") or {})

    def _notify_if_due(self) -> NotifyOutcome | None:
        """Without new events, a notify run only when it has something to do: pairs to send, stale
        claims of a stopped run to recover, uncertain deliveries old enough to look up on Zulip."""
        if why_no_run(self.warehouse.outbox(), self.pipeline_settings, dt.datetime.now(dt.UTC)):
            return None
        return self.notify()

    def run_forever(self, interval: float, on_poll: Callable[[PollOutcome], None], stop: threading.Event | None = None) -> None:
        """Poll every ``interval`` seconds until SIGINT/SIGTERM; the current poll always finishes.

        Polls run in a worker thread: Dagster swaps the main thread's signal
        handlers during a run and would swallow the stop request.
        """
        stop = stop or threading.Event()

        def loop() -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    outcome = self.poll_once()
                except Exception as exc:  # noqa: BLE001 - a daemon survives a failed poll and retries
                    outcome = PollOutcome(None, f"poll failed, retrying: {type(exc).__name__}: {exc}", success=False)
                on_poll(outcome)
                stop.wait(max(0.0, interval - (time.monotonic() - started)))

        worker = threading.Thread(target=loop, name="lms-monitor", daemon=True)
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            worker.start()
            while worker.is_alive():
                worker.join(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # statistics -------------------------------------------------------------
    def stats(self, now: dt.datetime | None = None) -> dict[str, Any]:
        """Counts, freshness and notification backlog, read from the warehouse and the LMS."""
        now = now or dt.datetime.now(dt.UTC)
        events, log = wh.lms_activity_events, wh.lms_event_log
        with self.warehouse.engine.connect() as conn:
            totals = dict(conn.execute(sa.select(events.c.event_type, sa.func.count()).group_by(events.c.event_type)).all())
            recent = dict(
                conn.execute(
                    sa.select(events.c.event_type, sa.func.count())
                    .where(events.c.timestamp >= now - dt.timedelta(hours=24))
                    .group_by(events.c.event_type)
                ).all()
            )
            newest = conn.execute(sa.select(sa.func.max(events.c.timestamp))).scalar()
            notifications = dict(conn.execute(sa.select(log.c.status, sa.func.count()).group_by(log.c.status)).all())
        state = self._state()
        # Lag from the data, not from a cursor: right whoever ingests (the sensor, this CLI, a backfill).
        fresh = freshness(self.lms, self.warehouse.engine)
        lms_marks = self.lms.high_water_marks(fresh.lms_now)
        last_ingest = self.instance.get_run_records(RunsFilter(job_name=INGEST_JOB_NAME), limit=1)
        return {
            "events_total": {t: int(totals.get(t, 0)) for t in ALL_EVENT_TYPES},
            "events_24h": {t: int(recent.get(t, 0)) for t in ALL_EVENT_TYPES},
            "newest_event": _as_utc(newest),
            "lms_newest_change": max((v for v in lms_marks.values() if v is not None), default=None),
            "lag_seconds": fresh.lag_seconds,
            "oldest_pending_change": fresh.oldest_pending,
            "staged_not_in_events": fresh.staged_pending,
            "staged_rejected": fresh.staged_rejected,
            "future_rows": fresh.future_rows,
            "future_rows_not_in_events": fresh.future_pending,
            "future_ahead_seconds": None if fresh.future_ahead is None else fresh.future_ahead.total_seconds(),
            "notifications": {s: int(notifications.get(s, 0)) for s in ("pending", "sent", "failed", "skipped", "dry_run")},
            "last_poll_at": _as_utc(state.get("last_poll_at")),
            "last_run_id": state.get("last_run_id"),
            "last_run_status": state.get("last_run_status"),
            "last_ingest": _run_summary(last_ingest[0]) if last_ingest else None,
        }


def _as_utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    return to_utc(pd.Timestamp(value).to_pydatetime())


def _run_summary(record: Any) -> dict[str, Any]:
    """When the newest ingest run started, who launched it and how it ended."""
    run = record.dagster_run
    started = record.start_time or record.create_timestamp.timestamp()
    return {
        "run_id": run.run_id,
        "started_at": dt.datetime.fromtimestamp(started, dt.UTC),
        "trigger": run.tags.get("lms/trigger") or ("backfill" if run.tags.get("dagster/backfill") else "manual"),
        "status": run.status.value,
    }


def _op_metadata(run: Any, op: str) -> dict[str, Any] | None:
    for event in run.all_events:
        if event.event_type_value == "STEP_OUTPUT" and event.step_key == op:
            return {k: v.value for k, v in event.event_specific_data.metadata.items()}
    return None


def _materialization(run: Any, asset: str) -> dict[str, Any] | None:
    for event in reversed(run.get_asset_materialization_events()):
        if event.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    return None
