"""The runs the pipeline launches, as Dagster ``RunRequest``s, and how to execute one in this process.

The sensors request these runs from the daemon; ``lms-activity monitor`` evaluates the same sensors and
executes what they request here, in-process, recorded in the same Dagster instance.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    Definitions,
    ExecuteInProcessResult,
    RunRequest,
    RunsFilter,
)

from lms_activity_pipeline import names
from lms_activity_pipeline.polling.followup import PendingRun, RunState
from lms_activity_pipeline.polling.plan import PollPlan

#: An incremental run covers minutes of changes and takes seconds; one still going after this long is hung
#: and would hold the single slot of the lms_ingest pool forever. Run monitoring (deploy/dagster.yaml)
#: terminates it; the sensor then requests the window again.
INCREMENTAL_RUN_MAX_RUNTIME_SECONDS = 3600

#: Run config that runs every step inside the run's own process. Dagster's default executor starts a
#: process per step (2-3 s each here, ~25 s for the ingest job's chain of steps, against ~2 s of work in an
#: incremental run), so incremental runs skip it; history runs keep the configured executor.
IN_PROCESS_CONFIG: dict[str, Any] = {"execution": {"config": {"in_process": {}}}}


def ingest_run_config(
    changed_since: dt.datetime | None = None, changed_until: dt.datetime | None = None
) -> dict[str, Any]:
    """Run config for an incremental run; empty (recompute) when no bounds are given."""
    if changed_since is None and changed_until is None:
        return {}
    config = {
        "changed_since": changed_since.isoformat() if changed_since else None,
        "changed_until": changed_until.isoformat() if changed_until else None,
    }
    return {"ops": {name: {"config": config} for name in names.INGEST_ASSETS}}


def partition_tags(first: str, last: str) -> tuple[str | None, dict[str, str]]:
    """The partition key of a one-day run, or the tags that make one run cover ``first``..``last``."""
    if first == last:
        return first, {}
    return None, {names.RANGE_START_TAG: first, names.RANGE_END_TAG: last}


def ingest_request(plan: PollPlan | PendingRun, trigger: str = "sensor", *, in_process: bool = False) -> RunRequest:
    """The ``lms_ingest_job`` run that covers ``plan``: one run, however many days.

    ``in_process`` (only with Dagster's default executor, whose config has that choice) runs an incremental
    run's steps in one process.
    """
    partition_key, tags = partition_tags(plan.first_partition, plan.last_partition)
    tags = {names.TRIGGER_TAG: trigger, **tags, **plan.run_tags()}
    if not plan.is_full_history:  # a first start's history run may rightly take hours
        tags[names.MAX_RUNTIME_TAG] = str(INCREMENTAL_RUN_MAX_RUNTIME_SECONDS)
    return RunRequest(
        run_key=plan.run_key,
        job_name=names.INGEST_JOB,
        run_config={
            **ingest_run_config(plan.changed_since, plan.changed_until),
            **(IN_PROCESS_CONFIG if in_process and not plan.is_full_history else {}),
        },
        partition_key=partition_key,
        tags=tags,
    )


def ingest_progress(instance: DagsterInstance, run_key: str) -> tuple[RunState, bool]:
    """:func:`run_state` of ``run_key``, and whether one of its runs still going has finished its
    ``lms_activity_events`` step (the events and their pending notifications are committed, whatever the feature
    steps after it still do); one look-up of the runs."""
    found = _runs_of(instance, run_key)
    state = _state(found)
    stored = state == RunState.RUNNING and any(
        r.event_log_entry.step_key == names.LMS_ACTIVITY_EVENTS
        for run in found
        for r in instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_SUCCESS).records
    )
    return state, stored


def companion_notify_request(ingest: RunRequest) -> RunRequest:
    """A ``notify_mentors_job`` run launched with the ingest run ``ingest``: it waits for that run and sends at
    once, its process start-up overlapping the ingest run (``notify_mentors_after_ingest`` then skips it)."""
    assert ingest.run_key is not None
    return RunRequest(
        run_key=f"notify-with-{ingest.run_key}",
        job_name=names.NOTIFY_JOB,
        run_config={"ops": {names.NOTIFY_OP: {"config": {"after_ingest_run_key": ingest.run_key}}}},
        tags={names.TRIGGER_TAG: "companion", names.COMPANION_OF_TAG: ingest.run_key},
    )


def companion_covers(instance: DagsterInstance, ingest: DagsterRun) -> DagsterRun | None:
    """The companion notify run that sends what the finished ingest run ``ingest`` enqueued: one still waiting
    for it, or one that saw it finish (tag :data:`~names.COMPANION_SAW_TAG`) and is sending or has sent."""
    run_key = ingest.tags.get(names.RUN_KEY_TAG)
    if not run_key:
        return None
    for run in instance.get_runs(RunsFilter(tags={names.COMPANION_OF_TAG: run_key}), limit=5):
        saw = run.tags.get(names.COMPANION_SAW_TAG)
        if (saw is None and not run.is_finished) or (saw == "finished" and run.status != DagsterRunStatus.FAILURE):
            return run
    return None


def notify_request(trigger: str, *, after_run: str | None = None) -> RunRequest:
    """A ``notify_mentors_job`` run; one per ingest run when it follows one (its run key)."""
    tags = {names.TRIGGER_TAG: trigger}
    if after_run is not None:
        tags[names.INGEST_RUN_ID_TAG] = after_run
    return RunRequest(run_key=f"notify-after-{after_run}" if after_run else None, job_name=names.NOTIFY_JOB, tags=tags)


def run_state(instance: DagsterInstance, run_key: str) -> RunState:
    """How the runs launched for ``run_key`` (Dagster's retries keep the key) stand."""
    return _state(_runs_of(instance, run_key))


def _runs_of(instance: DagsterInstance, run_key: str) -> list[DagsterRun]:
    return list(instance.get_runs(RunsFilter(tags={names.RUN_KEY_TAG: run_key}), limit=10))


def _state(runs: list[DagsterRun]) -> RunState:
    if not runs:
        return RunState.WAITING
    if any(r.status == DagsterRunStatus.SUCCESS for r in runs):
        return RunState.DONE
    if any(not r.is_finished for r in runs) or runs[0].tags.get(names.WILL_RETRY_TAG) == "true":
        return RunState.RUNNING
    return RunState.FAILED


def execute(
    defs: Definitions,
    instance: DagsterInstance,
    request: RunRequest,
    *,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = False,
    on_log: Callable[[str], None] | None = None,
) -> ExecuteInProcessResult:
    """Execute a requested run in this process, recorded in ``instance`` as the daemon would have launched it
    (its run key, tags, partition or partition range). ``run_config`` adds job-level config (log levels).

    ``on_log`` is told, while the run goes on, every message its steps log at INFO or above (progress of a
    long run), read back from the run's event log.
    """
    job = defs.resolve_job_def(request.job_name or names.INGEST_JOB)
    tags = dict(request.tags)
    if request.run_key:
        tags[names.RUN_KEY_TAG] = request.run_key
    run_id = str(uuid.uuid4())  # known before the run starts, so its log can be followed

    def run() -> ExecuteInProcessResult:
        return job.execute_in_process(
            run_config={**(run_config or {}), **(request.run_config or {})},
            instance=instance,
            partition_key=request.partition_key,
            tags=tags,
            raise_on_error=raise_on_error,
            run_id=run_id,
        )

    if on_log is None:
        return run()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lms-run") as pool:
        done = pool.submit(run)
        cursor: str | None = None
        while True:
            finished = done.done()
            cursor = _tell_messages(instance, run_id, cursor, on_log)
            if finished:
                return done.result()
            time.sleep(LOG_POLL_SECONDS)


#: How often a run executed with ``on_log`` has its new log messages read back.
LOG_POLL_SECONDS = 0.5


def _tell_messages(
    instance: DagsterInstance, run_id: str, cursor: str | None, on_log: Callable[[str], None]
) -> str | None:
    """Pass on the run's user log messages (INFO and above) since ``cursor``; returns the new cursor."""
    if not instance.has_run(run_id):
        return cursor
    found = instance.get_records_for_run(run_id, cursor=cursor)
    for record in found.records:
        entry = record.event_log_entry
        level = entry.level if isinstance(entry.level, int) else logging.getLevelName(entry.level)
        if entry.dagster_event is None and isinstance(level, int) and level >= logging.INFO:
            on_log(entry.user_message)
    return found.cursor if found.records else cursor


def run_ingest(
    defs: Definitions,
    instance: DagsterInstance,
    first: str,
    last: str | None = None,
    *,
    changed_since: dt.datetime | None = None,
    changed_until: dt.datetime | None = None,
    tags: dict[str, str] | None = None,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
) -> ExecuteInProcessResult:
    """Run ``lms_ingest_job`` over the days ``first``..``last`` as one run in ``instance`` (a recompute, or
    incremental with the change bounds)."""
    partition_key, range_tags = partition_tags(first, last or first)
    request = RunRequest(
        job_name=names.INGEST_JOB,
        run_config=ingest_run_config(changed_since, changed_until),
        partition_key=partition_key,
        tags={**(tags or {}), **range_tags},
    )
    return execute(defs, instance, request, run_config=run_config, raise_on_error=raise_on_error)


def notify_run_config(
    event_types: tuple[str, ...] | None = None, *, retry_all_failed: bool = False, **options: Any
) -> dict[str, Any]:
    """Run config of ``send_mentor_notifications`` (defaults: what the sensors and the schedule use)."""
    config: dict[str, Any] = {"retry_all_failed": retry_all_failed, **options}
    if event_types:
        config["event_types"] = list(event_types)
    return {"ops": {names.NOTIFY_OP: {"config": config}}}


def run_notify(
    defs: Definitions,
    instance: DagsterInstance,
    *,
    event_types: tuple[str, ...] | None = None,
    retry_all_failed: bool = False,
    tags: dict[str, str] | None = None,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
    **options: Any,
) -> ExecuteInProcessResult:
    """Run ``notify_mentors_job`` once in ``instance``; ``options`` are further op config fields."""
    request = RunRequest(
        job_name=names.NOTIFY_JOB,
        run_config=notify_run_config(event_types, retry_all_failed=retry_all_failed, **options),
        tags=tags or {},
    )
    return execute(defs, instance, request, run_config=run_config, raise_on_error=raise_on_error)


# --- students at risk ---
def run_student_risk(
    defs: Definitions,
    instance: DagsterInstance,
    first: str,
    last: str | None = None,
    *,
    tags: dict[str, str] | None = None,
    run_config: dict[str, Any] | None = None,
    raise_on_error: bool = True,
) -> ExecuteInProcessResult:
    """Run ``student_risk_job`` over the days ``first``..``last`` as one run in ``instance``."""
    partition_key, range_tags = partition_tags(first, last or first)
    request = RunRequest(job_name=names.RISK_JOB, partition_key=partition_key, tags={**(tags or {}), **range_tags})
    return execute(defs, instance, request, run_config=run_config, raise_on_error=raise_on_error)
