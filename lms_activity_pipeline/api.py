"""Python API for analysts and AI jobs: the queue of unprocessed events, and student histories.

No Dagster is imported or needed. Without ``engine`` every function reads the
warehouse the pipeline writes (``LMS_WAREHOUSE_URL``, ``LMS_WAREHOUSE_SCHEMA``,
validated by :func:`~lms_activity_pipeline.settings.load_settings`) and creates
its tables if missing; an explicit SQLAlchemy ``engine`` is used as given
(tables resolved to ``LMS_WAREHOUSE_SCHEMA`` on PostgreSQL unless the engine
already maps them). Event frames have the columns of ``lms_activity_events``
(``activity_metadata`` as dicts, times as UTC timestamps); features are in
``ai_ready_events``, joined on ``event_id``.

Claiming is at-least-once with leases. :func:`claim_unprocessed_events`
picks, in one transaction, the oldest unprocessed events that are unclaimed
or whose lease ran out, and records the claim (``ai_claimed_by``,
``ai_claim_expires_at`` = now + lease). On PostgreSQL the pick is ``SELECT ...
FOR UPDATE SKIP LOCKED``: concurrent workers skip each other's rows instead of
waiting, and never get the same event while a lease holds. The worker then
calls :func:`mark_processed`. A worker that crashes never marks its batch; once
the lease expires the events are claimable again, so nothing is lost, but an
event can be handled twice if a worker outlives its lease (keep handlers
idempotent, leases longer than the work). On SQLite the claim runs in
``BEGIN IMMEDIATE``: claimers queue on the single write lock (30 s
``busy_timeout``) and each sees the previous claims, which suits one or a few
local workers.

Example::

    from lms_activity_pipeline import api

    batch = api.claim_unprocessed_events(100, ["exam_failed"])
    for event in batch.itertuples():
        handle(event)
    api.mark_processed(batch)
"""

from __future__ import annotations

import datetime as dt
import functools
import numbers
import os
import socket
import uuid
from collections.abc import Iterable

import pandas as pd
from sqlalchemy.engine import Engine

from lms_activity_pipeline import db
from lms_activity_pipeline.domain import risk
from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES
from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.errors import ConfigError
from lms_activity_pipeline.settings import load_settings, load_variable, parse_event_types
from lms_activity_pipeline.warehouse import processing
from lms_activity_pipeline.warehouse import risk as risk_sql
from lms_activity_pipeline.warehouse.engine import is_translated, open_warehouse, translated

DEFAULT_LEASE_SECONDS = 600.0

__all__ = ["claim_unprocessed_events", "mark_processed", "student_history", "students_at_risk", "unprocessed_events"]


def unprocessed_events(
    event_types: str | Iterable[str] | None = None, limit: int | None = None, *, engine: Engine | None = None
) -> pd.DataFrame:
    """Events not yet processed for AI, oldest first, whether claimed or not.

    ``event_types``: one type, a comma-separated string or a list (default all
    seven). ``limit``: at most this many rows (default all).
    """
    types, count = _event_types(event_types), _count("limit", limit, optional=True)
    with _warehouse(engine).connect() as conn:
        return db.read_typed(conn, processing.unprocessed(types, count))


def claim_unprocessed_events(
    limit: int,
    event_types: str | Iterable[str] | None = None,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    worker: str | None = None,
    engine: Engine | None = None,
) -> pd.DataFrame:
    """Claim up to ``limit`` unprocessed events for this worker, oldest first (see the module doc).

    Returns the events plus ``ai_claimed_by`` (``worker`` or host:pid, plus a
    per-claim suffix) and ``ai_claim_expires_at``. Call :func:`mark_processed`
    before the lease ends.
    """
    count, types = _integer("limit", limit), _event_types(event_types)
    if count < 0:
        raise ValueError(f"limit must be >= 0, got {count}")
    lease = dt.timedelta(seconds=_positive("lease_seconds", lease_seconds))
    token = f"{worker or _default_worker()}/{uuid.uuid4().hex[:12]}"
    with db.write_transaction(_warehouse(engine)) as conn:
        processing.claim(conn, count, types, token, dt.datetime.now(dt.UTC), lease)
        return db.read_typed(conn, processing.claimed_by(token))


def mark_processed(event_ids: Iterable[int] | pd.DataFrame, *, engine: Engine | None = None) -> int:
    """Mark events processed for AI (and their ``ai_ready_events`` rows); returns how many were newly marked.

    ``event_ids`` may be ids or a frame with an ``event_id`` column (e.g. a
    claimed batch). Unknown and already processed ids are ignored.
    """
    ids = _event_ids(event_ids)
    if not ids:
        return 0
    with db.write_transaction(_warehouse(engine)) as conn:
        return processing.mark_processed(conn, ids)


def student_history(
    student_id: int, days: float = 30, *, as_of: dt.datetime | None = None, engine: Engine | None = None
) -> pd.DataFrame:
    """A student's events of the ``days`` before ``as_of`` (default now), newest first."""
    student = _integer("student_id", student_id)
    until = to_utc(as_of) if as_of is not None else dt.datetime.now(dt.UTC)
    since = until - dt.timedelta(days=_positive("days", days))
    with _warehouse(engine).connect() as conn:
        return db.read_typed(conn, processing.student_history(student, since, until))


def students_at_risk(
    as_of: dt.date | str | None = None,
    level: str = "medium",
    course_id: int | None = None,
    *,
    engine: Engine | None = None,
) -> pd.DataFrame:
    """``student_risk`` rows of day ``as_of`` (default: the latest day computed) at ``level`` or worse
    (``"high"``, ``"medium"`` or ``"low"`` for every row), of ``course_id`` if given, highest score first.

    Columns are those of ``student_risk``; ``reasons`` is a list of ``{code, detail, value, threshold}``
    dicts. Empty when nothing was computed for that day.
    """
    levels = risk.levels_from(level)
    course = None if course_id is None else _integer("course_id", course_id)
    day = _day("as_of", as_of) if as_of is not None else None
    with _warehouse(engine).connect() as conn:
        day = day or risk_sql.latest_day(conn)
        return db.read_typed(conn, risk_sql.risk_rows(day or dt.date.min, levels, course))


def _day(name: str, value: object) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{name} must be a date (YYYY-MM-DD), got {value!r}") from None


# -- engines -------------------------------------------------------------------------------


def _warehouse(engine: Engine | None) -> Engine:
    if engine is None:
        settings = load_settings()
        return _open(settings.warehouse_url, settings.warehouse_schema)
    if is_translated(engine):
        return engine
    return translated(
        engine, load_variable("LMS_WAREHOUSE_SCHEMA")
    )  # only this variable: the rest of the environment is not ours


@functools.cache
def _open(url: str, schema_name: str) -> Engine:
    return open_warehouse(url, schema_name)


def _default_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# -- validation ----------------------------------------------------------------------------


def _event_types(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ALL_EVENT_TYPES
    if isinstance(value, str):
        names = value.split(",")
    elif isinstance(value, Iterable):
        names = [str(v) for v in value]
    else:
        raise TypeError(f"event_types must be an event type, a list of them or None, not {type(value).__name__}")
    try:
        return parse_event_types("event_types", ",".join(names))
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _integer(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _count(name: str, value: object, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    number = _integer(name, value)
    if number < 0:
        raise ValueError(f"{name} must be >= 0, got {number}")
    return number


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def _event_ids(values: Iterable[int] | pd.DataFrame) -> list[int]:
    if isinstance(values, pd.DataFrame):
        if "event_id" not in values.columns:
            raise ValueError("a frame passed as event_ids needs an event_id column")
        values = values["event_id"]
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"event_ids must be a collection of integers, got {values!r}")
    return sorted({_integer("event_ids", v) for v in values})
