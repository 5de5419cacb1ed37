"""``lms-activity monitor``'s engine: the daemon's sensors, evaluated and carried out in this process.

A poll evaluates ``lms_activity_sensor`` (the same function, the same cursor in the warehouse) and
executes the runs it requests in-process, recorded in the Dagster instance; after each successful
ingest run it evaluates ``notify_mentors_after_ingest`` on that run, and when nothing was ingested it
evaluates ``notify_mentors_retry_schedule`` (every poll, not every 10 minutes), executing what they
request. So the CLI and ``dagster-daemon`` share one path: change detection, run keys, the follow-up
of failed runs, stale-claim recovery and uncertain-delivery settling.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from dagster import (
    DagsterInstance,
    Definitions,
    ExecuteInProcessResult,
    RunRequest,
    SensorResult,
    SkipReason,
    build_run_status_sensor_context,
    build_schedule_context,
    build_sensor_context,
)

from lms_activity_pipeline import names
from lms_activity_pipeline.cli.outcomes import PollOutcome, RunOutcome, poll_line
from lms_activity_pipeline.defs import runs


class _Lines(logging.Handler):
    """Collects a sensor's log lines (and whether each is a warning) instead of printing them in Dagster's format."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[tuple[bool, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno >= logging.WARNING, record.getMessage()))


class Monitor:
    """Polls like the daemon's sensor and runs what it requests here; every run is a Dagster run in ``instance``."""

    def __init__(
        self,
        defs: Definitions,
        instance: DagsterInstance,
        resources: dict[str, Any],
        *,
        run_config: dict[str, Any] | None = None,
        on_log: Callable[[str], None] | None = None,
    ) -> None:
        self.defs = defs
        self.instance = instance
        #: The resources the sensors and the schedule are evaluated with (runs use the definitions' own).
        self.resources = resources
        self.run_config = run_config or {}
        #: Told, as they happen, the sensor's lines and every INFO message of the runs (progress of a long
        #: run); without it the outcome carries the sensor's lines.
        self.on_log = on_log

    # --- one poll -------------------------------------------------------------------------------

    def poll_once(self) -> PollOutcome:
        """Evaluate ``lms_activity_sensor`` once and execute its run requests (each followed by its notify run)."""
        sensor = self.defs.resolve_sensor_def(names.ACTIVITY_SENSOR)
        lines = _Lines()
        with build_sensor_context(instance=self.instance, resources=self.resources, sensor_name=sensor.name) as context:
            context.log.handlers[:] = [lines]
            result = sensor(context)
        assert isinstance(result, SensorResult)
        if self.on_log is not None:  # say what the poll found before the runs start
            for warning, line in lines.lines:
                self.on_log(poll_line(warning, line))
        outcomes: list[RunOutcome] = []
        for request in result.run_requests or []:
            run = self._run(request)
            outcomes.append(run_outcome(request, run))
            if run.success and request.job_name == names.INGEST_JOB:
                outcomes.extend(self._after_ingest(run))
        skip = result.skip_reason.skip_message if isinstance(result.skip_reason, SkipReason) else result.skip_reason
        if not outcomes:
            outcomes.extend(self._retry_schedule())
        self._health_alerts()
        return PollOutcome(lines.lines, skip, outcomes)

    def _retry_schedule(self) -> list[RunOutcome]:
        """Evaluate ``notify_mentors_retry_schedule`` now: a notify run when one is due (stale claims, uncertain
        deliveries to settle, pairs left open), as the daemon does every 10 minutes."""
        schedule = self.defs.resolve_schedule_def(names.NOTIFY_RETRY_SCHEDULE)
        with build_schedule_context(instance=self.instance, resources=self.resources) as context:
            requested = schedule(context)
        if not isinstance(requested, RunRequest):
            return []
        return [self._execute(requested.with_replaced_attrs(job_name=names.NOTIFY_JOB))]

    def _after_ingest(self, run: ExecuteInProcessResult) -> list[RunOutcome]:
        """Evaluate ``notify_mentors_after_ingest`` on the finished run, as the daemon would, and execute it."""
        sensor = self.defs.resolve_sensor_def(names.NOTIFY_AFTER_INGEST_SENSOR)
        with build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=run.get_run_success_event(),
            dagster_instance=self.instance,
            dagster_run=run.dagster_run,
            resources=self.resources,
        ) as context:
            requested = sensor(context)
        if not isinstance(requested, RunRequest):
            return []
        return [self._execute(requested.with_replaced_attrs(job_name=names.NOTIFY_JOB))]

    def _execute(self, request: RunRequest) -> RunOutcome:
        return run_outcome(request, self._run(request))

    def _run(self, request: RunRequest) -> ExecuteInProcessResult:
        if request.job_name == names.INGEST_JOB:  # the sensor's request, launched by the CLI
            request = request.with_replaced_attrs(tags={**request.tags, names.TRIGGER_TAG: "cli"})
        run = runs.execute(self.defs, self.instance, request, run_config=self.run_config, on_log=self.on_log)
        if not run.success:
            self._run_failure_alert(run)
        return run

    # --- operational alerts: the daemon's alert sensors, evaluated here ------------------------------

    def _run_failure_alert(self, run: ExecuteInProcessResult) -> None:
        """Evaluate ``lms_run_failure_alerts`` on a run that failed here (Dagster never retries it)."""
        stored = self.instance.get_run_by_id(run.run_id) or run.dagster_run
        try:
            sensor = self.defs.resolve_sensor_def(names.RUN_FAILURE_ALERTS_SENSOR)
            with build_run_status_sensor_context(
                sensor_name=sensor.name,
                dagster_event=run.get_run_failure_event(),
                dagster_instance=self.instance,
                dagster_run=stored,
                resources=self.resources,
            ) as context:
                self._say(sensor(context.for_run_failure()))
        except Exception as exc:  # noqa: BLE001 - an alert never stops the monitor
            self._say(SkipReason(f"run failure alert not evaluated: {type(exc).__name__}: {exc}"))

    def _health_alerts(self) -> None:
        """Evaluate ``lms_health_alerts`` (backlog, lag, failing mentors, ...), as the daemon does every minute."""
        try:
            sensor = self.defs.resolve_sensor_def(names.HEALTH_ALERTS_SENSOR)
            with build_sensor_context(
                instance=self.instance, resources=self.resources, sensor_name=sensor.name
            ) as context:
                self._say(sensor(context))
        except Exception as exc:  # noqa: BLE001
            self._say(SkipReason(f"health alerts not evaluated: {type(exc).__name__}: {exc}"))

    def _say(self, outcome: object) -> None:
        message = outcome.skip_message if isinstance(outcome, SkipReason) else None
        if message and self.on_log is not None and "nothing new" not in message:
            self.on_log(poll_line(True, message))

    # --- notifications on demand ------------------------------------------------------------------

    def process_pending(self, event_types: tuple[str, ...] | None) -> RunOutcome:
        """One notify run for pending and every failed pair (uncertain deliveries are looked up first)."""
        request = RunRequest(
            job_name=names.NOTIFY_JOB,
            run_config=runs.notify_run_config(event_types, retry_all_failed=True),
            tags={names.TRIGGER_TAG: "cli-process-pending"},
        )
        return self._execute(request)

    # --- forever -----------------------------------------------------------------------------------

    def run_forever(
        self,
        interval: float,
        on_poll: Callable[[PollOutcome], None],
        stop: threading.Event | None = None,
        wake: Callable[[], bool] | None = None,
    ) -> None:
        """Poll every ``interval`` seconds until SIGINT/SIGTERM; the current poll always finishes.

        ``wake`` (asked every :data:`WAKE_CHECK_SECONDS` between polls): poll now, e.g. when LMS webhooks
        are waiting in the inbox. Polls run in a worker thread: Dagster swaps the main thread's signal
        handlers during a run and would swallow the stop request.
        """
        stop = stop or threading.Event()

        def pause(seconds: float) -> None:
            until = time.monotonic() + seconds
            while not stop.is_set() and (left := until - time.monotonic()) > 0:
                if stop.wait(min(left, WAKE_CHECK_SECONDS)) or (wake is not None and _asks(wake)):
                    return

        def loop() -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    outcome = self.poll_once()
                except Exception as exc:  # noqa: BLE001 - a daemon survives a failed poll and retries
                    outcome = PollOutcome([(True, f"poll failed, retrying: {type(exc).__name__}: {exc}")], None, [])
                on_poll(outcome)
                pause(max(0.0, interval - (time.monotonic() - started)))

        worker = threading.Thread(target=loop, name="lms-monitor", daemon=True)
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            worker.start()
            while worker.is_alive():
                worker.join(0.2)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


#: Between polls, ``wake`` is asked this often.
WAKE_CHECK_SECONDS = 0.25


def _asks(wake: Callable[[], bool]) -> bool:
    try:
        return wake()
    except Exception:  # noqa: BLE001 - a failing check (warehouse down) just waits for the next poll
        return False


def run_outcome(request: RunRequest, run: ExecuteInProcessResult) -> RunOutcome:
    return RunOutcome(request, run.run_id, run.success, step_metadata(run))


def step_metadata(run: ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    """Each asset's last materialisation metadata and each op's output metadata, by name."""
    found: dict[str, dict[str, Any]] = {}
    for event in run.all_events:
        if event.event_type_value == "STEP_OUTPUT" and event.step_key:
            found[event.step_key] = {k: v.value for k, v in event.event_specific_data.metadata.items()}  # type: ignore[union-attr]
    for event in run.get_asset_materialization_events():
        materialization = event.materialization
        found[materialization.asset_key.to_user_string()] = {k: v.value for k, v in materialization.metadata.items()}
    return found
