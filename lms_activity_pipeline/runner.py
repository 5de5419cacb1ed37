"""Launch ``lms_ingest_job`` runs (a day or a range of days, recompute or incremental) and
``notify_mentors_job`` runs, recorded in a Dagster instance.

Used by the CLI and the tests; the sensor builds the same run config and tags
through :func:`ingest_run_config` and :func:`partition_range_tags`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from dagster import DagsterInstance, Definitions, ExecuteInProcessResult

from lms_activity_pipeline.jobs import INGEST_JOB_NAME, NOTIFY_JOB_NAME
from lms_activity_pipeline.ops.notify import OP_NAME as NOTIFY_OP_NAME

INGEST_ASSETS = ("raw_exam_attempts", "raw_content_attempts", "lms_activity_events")
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def ingest_run_config(changed_since: dt.datetime | None = None, changed_until: dt.datetime | None = None) -> dict[str, Any]:
    """Run config for an incremental run; empty (recompute) when no bounds are given."""
    if changed_since is None and changed_until is None:
        return {}
    config = {
        "changed_since": changed_since.isoformat() if changed_since else None,
        "changed_until": changed_until.isoformat() if changed_until else None,
    }
    return {"ops": {name: {"config": config} for name in INGEST_ASSETS}}


def partition_range_tags(first: str, last: str) -> dict[str, str]:
    """Tags that make one run cover the partitions ``first``..``last`` (inclusive)."""
    return {RANGE_START_TAG: first, RANGE_END_TAG: last}


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
    """Run ``lms_ingest_job`` over the days ``first``..``last`` as one run in ``instance``.

    ``run_config`` adds job-level config (e.g. logger levels) to the incremental window.
    """
    job = defs.resolve_job_def(INGEST_JOB_NAME)
    all_tags = dict(tags or {})
    partition_key = None
    if last is None or last == first:
        partition_key = first
    else:
        all_tags.update(partition_range_tags(first, last))
    return job.execute_in_process(
        run_config={**(run_config or {}), **ingest_run_config(changed_since, changed_until)},
        instance=instance,
        partition_key=partition_key,
        tags=all_tags,
        raise_on_error=raise_on_error,
    )


def notify_run_config(
    event_types: tuple[str, ...] | None = None, *, retry_all_failed: bool = False, **options: Any
) -> dict[str, Any]:
    """Run config of ``send_mentor_notifications`` (defaults: what the sensor and schedule use)."""
    config: dict[str, Any] = {"retry_all_failed": retry_all_failed, **options}
    if event_types:
        config["event_types"] = list(event_types)
    return {"ops": {NOTIFY_OP_NAME: {"config": config}}}


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
    job = defs.resolve_job_def(NOTIFY_JOB_NAME)
    return job.execute_in_process(
        run_config={**(run_config or {}), **notify_run_config(event_types, retry_all_failed=retry_all_failed, **options)},
        instance=instance,
        tags=tags or {},
        raise_on_error=raise_on_error,
    )
