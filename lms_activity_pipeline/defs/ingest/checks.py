"""Data-quality asset checks, run with every materialisation of their asset.

A check launched with a materialisation looks only at that run's partition
window (one day or a backfill's range), so it stays cheap at any table size;
launched on its own (e.g. from the UI) it checks the whole table.
``no_future_events`` always looks at the whole table: the ``timestamp`` index
makes that a range scan over future rows only. A failure says how many rows
offend and previews them.

Blocking (ERROR) checks stop ``ai_ready_events`` and ``student_daily_activity``
from being built on a bad event table (the run fails): duplicate keys would
double-count features, unknown types and impossible percentages would poison
them. Future events and students missing from the LMS (e.g. deleted
accounts) are WARN: the tables stay usable, someone should look.

The five checks on ``lms_activity_events`` share one step (a multi-asset
check): with Dagster's multiprocess executor every step is a process, and
each ingest run would otherwise start five of them. They still show, pass,
fail and block one by one.
"""

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    asset_check,
    multi_asset_check,
)

from lms_activity_pipeline import names
from lms_activity_pipeline.defs import metadata as md
from lms_activity_pipeline.defs.resources import LMSResource, WarehouseResource
from lms_activity_pipeline.lms.reader import LMSReader
from lms_activity_pipeline.warehouse import quality
from lms_activity_pipeline.warehouse.store import Warehouse

EVENTS_ASSET = names.LMS_ACTIVITY_EVENTS
AI_ASSET = names.AI_READY_EVENTS
PREVIEW_ROWS = 20
ERROR, WARN = AssetCheckSeverity.ERROR, AssetCheckSeverity.WARN

#: What a check found: how many rows offend, and (some of) them.
Finding = tuple[int, pd.DataFrame]


@dataclass(frozen=True)
class EventCheck:
    """One check on ``lms_activity_events``: ``find`` returns the offending rows of a window."""

    name: str
    description: str
    what: str
    severity: AssetCheckSeverity
    find: Callable[[quality.Window, Warehouse, LMSReader], Finding]
    whole_table: bool = False

    @property
    def blocking(self) -> bool:
        return self.severity == ERROR


def _rows(warehouse: Warehouse, stmt: sa.Select | sa.CompoundSelect) -> Finding:
    found = warehouse.count(stmt)
    return found, warehouse.read_typed(stmt.limit(PREVIEW_ROWS)) if found else pd.DataFrame()


def _missing_students(window: quality.Window, warehouse: Warehouse, lms: LMSReader) -> Finding:
    students = warehouse.read_typed(quality.students_in_window(window))
    known = lms.existing_user_ids(students["student_id"].dropna().astype("int64").tolist())
    missing = students[~students["student_id"].isin(known)].sort_values("student_id")
    return len(missing), missing


EVENT_CHECKS = (
    EventCheck(
        "event_key_unique",
        "Every event_key occurs once (ERROR, blocking).",
        "duplicated event_key values",
        ERROR,
        lambda window, warehouse, _: _rows(warehouse, quality.duplicate_event_keys(window)),
    ),
    EventCheck(
        "event_types_known",
        "Every event_type is one of the seven known types (ERROR, blocking).",
        "events of unknown type",
        ERROR,
        lambda window, warehouse, _: _rows(warehouse, quality.unknown_event_types(window)),
    ),
    EventCheck(
        "percentages_in_range",
        "activity_metadata percentage and progress_percent lie within 0..100 (ERROR, blocking).",
        "events with a percentage outside 0..100",
        ERROR,
        lambda window, warehouse, _: _rows(warehouse, quality.percentages_out_of_range(window)),
    ),
    EventCheck(
        "no_future_events",
        f"No event is more than {quality.FUTURE_TOLERANCE.seconds // 60} minutes ahead of the pipeline's clock; "
        "always the whole table (WARN).",
        "events in the future",
        WARN,
        lambda _, warehouse, __: _rows(warehouse, quality.future_events(dt.datetime.now(dt.UTC))),
        whole_table=True,
    ),
    EventCheck(
        "students_exist_in_lms",
        "Every event's student_id is a row of the LMS Users table (WARN).",
        "students missing from the LMS Users table",
        WARN,
        _missing_students,
    ),
)


def _scope(context: AssetCheckExecutionContext) -> tuple[quality.Window, str]:
    """The run's partition window (``None``: whole table) and how to name it."""
    if not (context.has_partition_key or context.has_partition_key_range):
        return None, "the whole table"
    window = context.partition_time_window
    return (window.start, window.end), f"events of {window.start:%Y-%m-%d %H:%M} .. {window.end:%Y-%m-%d %H:%M}"


def check_result(
    key: AssetCheckKey, finding: Finding, what: str, scope: str, severity: AssetCheckSeverity
) -> AssetCheckResult:
    """Passed when nothing was found; otherwise ``severity``, a one-line description and the offending rows."""
    found, preview = finding
    return AssetCheckResult(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=found == 0,
        severity=severity,
        description=f"{what}: {found or 'none'} in {scope}",
        metadata={
            "offending_rows": MetadataValue.int(found),
            "scope": MetadataValue.text(scope),
            "preview": md.preview(preview, rows=PREVIEW_ROWS),
        },
    )


_CHECKS = {c.name: c for c in EVENT_CHECKS}


@multi_asset_check(
    name="lms_activity_events_checks",
    specs=[
        AssetCheckSpec(c.name, asset=EVENTS_ASSET, blocking=c.blocking, description=c.description) for c in EVENT_CHECKS
    ],
    can_subset=True,
    description="Data-quality checks on lms_activity_events, scoped to the run's partitions.",
)
def lms_activity_events_checks(
    context: AssetCheckExecutionContext, warehouse: WarehouseResource, lms: LMSResource
) -> Iterator[AssetCheckResult]:
    window, scope = _scope(context)
    store, reader = warehouse.store(), lms.reader()
    for key in sorted(context.selected_asset_check_keys, key=lambda k: k.name):
        check = _CHECKS[key.name]
        where = "the whole table" if check.whole_table else scope
        yield check_result(key, check.find(window, store, reader), check.what, where, check.severity)


@asset_check(
    asset=AI_ASSET, description="Exactly one ai_ready_events row per lms_activity_events row of the partition (ERROR)."
)
def one_row_per_event(context: AssetCheckExecutionContext, warehouse: WarehouseResource) -> AssetCheckResult:
    window, scope = _scope(context)
    what = "events without exactly one ai_ready_events row, or rows without an event"
    finding = _rows(warehouse.store(), quality.ai_rows_not_one_per_event(window))
    return check_result(AssetCheckKey(AssetKey(AI_ASSET), "one_row_per_event"), finding, what, scope, ERROR)
