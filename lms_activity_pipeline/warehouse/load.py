"""Set-based loads into the warehouse: bulk-copy into a staging table, then one upsert.

Upserts only rewrite rows whose values changed (``IS DISTINCT FROM``), so
reprocessing an unchanged partition touches nothing, and columns owned by
other writers (``event_id``, ``created_at``, ``processed_for_ai``,
``zulip_user_id``) are never in the update set.

First loads skip the staging table: on PostgreSQL, when a sample of the
frame's keys (:data:`PROBE_SAMPLE`, evenly spread) is not in the target, the
frame is ``COPY``-ed straight into the target inside a savepoint; any stored
key makes that ``COPY`` fail on the unique index, the savepoint is rolled back
and the staged upsert runs instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from lms_activity_pipeline import db
from lms_activity_pipeline.warehouse.schema import lms_activity_events


@dataclass(frozen=True)
class UpsertResult:
    """What an upsert did: rows new to the table, rows changed, rows already identical, rows pruned."""

    inserted: int
    updated: int
    unchanged: int
    deleted: int = 0

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.unchanged

    def __add__(self, other: UpsertResult) -> UpsertResult:
        return UpsertResult(
            self.inserted + other.inserted,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
            self.deleted + other.deleted,
        )


def _stage(conn: sa.Connection, name: str, columns: list[sa.Column], frame: pd.DataFrame) -> sa.Table:
    stage = db.temp_table(name, columns)
    stage.drop(conn, checkfirst=True)
    stage.create(conn)
    db.bulk_insert(conn, stage, frame)
    return stage


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    frame: pd.DataFrame,
    key: str | Sequence[str],
    *,
    touch: str | None = None,
    stage_columns: list[sa.Column] | None = None,
    casts: dict[str, sa.types.TypeEngine] | None = None,
    prune: sa.ColumnElement[bool] | None = None,
) -> UpsertResult:
    """Insert or update ``frame`` into ``table`` by the unique column (or columns) ``key``.

    ``touch`` names a timestamp column set to now on insert and real update.
    ``stage_columns`` overrides the staging table's columns (e.g. JSON as text);
    ``casts`` casts staged columns to the target type on the way in.
    ``prune`` makes ``frame`` the whole truth for the rows it matches (a
    recomputed window): those whose key is not in ``frame`` are deleted.
    """
    keys = [key] if isinstance(key, str) else list(key)
    if frame.empty:
        deleted = conn.execute(table.delete().where(prune)).rowcount if prune is not None else 0
        return UpsertResult(0, 0, 0, deleted)
    columns = [c for c in table.columns if c.name in frame.columns]
    if prune is None and (result := copy_if_all_new(conn, table, frame, keys, touch)) is not None:
        return result
    stage = _stage(conn, f"_stage_{table.name}", stage_columns or columns, frame)
    result = _merge(conn, table, stage, len(frame), [c.name for c in columns], keys, touch, casts or {})
    if prune is None:
        return result
    sa.Index(f"ix{stage.name}_key", *[stage.c[k] for k in keys]).create(conn)  # else SQLite scans per row
    kept = sa.exists().where(*[stage.c[k] == table.c[k] for k in keys])
    deleted = conn.execute(table.delete().where(prune, ~kept)).rowcount
    return UpsertResult(result.inserted, result.updated, result.unchanged, deleted)


UNIQUE_VIOLATION = "23505"
#: Keys probed before trying the COPY fast path (evenly spread over the frame).
PROBE_SAMPLE = 1000


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a psycopg2 error, raw or wrapped by SQLAlchemy."""
    return getattr(exc, "pgcode", None) or getattr(getattr(exc, "orig", None), "pgcode", None)


def copy_if_all_new(
    conn: sa.Connection, table: sa.Table, frame: pd.DataFrame, keys: Sequence[str], touch: str | None
) -> UpsertResult | None:
    """COPY ``frame`` straight into ``table`` when none of its keys is there yet (PostgreSQL, one key column).

    Returns ``None`` (nothing written) when the staged upsert must run instead.
    """
    if not db.is_postgres(conn) or len(keys) != 1:
        return None
    key = table.c[keys[0]]
    values = frame[key.name]
    sample = values.iloc[:: max(len(values) // PROBE_SAMPLE, 1)]  # the COPY itself catches the rest
    wanted = sa.bindparam("keys", sample.tolist(), type_=postgresql.ARRAY(key.type))
    if conn.execute(sa.select(sa.literal(1)).select_from(table).where(key == sa.any_(wanted)).limit(1)).first():
        return None
    rows = frame[[c.name for c in table.columns if c.name in frame.columns]]
    if touch:
        now = conn.execute(sa.select(sa.func.current_timestamp())).scalar_one()
        rows = rows.assign(**{touch: pd.Timestamp(now)})
    try:
        with conn.begin_nested():
            db.bulk_insert(conn, table, rows)
    except Exception as exc:
        if _sqlstate(exc) != UNIQUE_VIOLATION:
            raise
        return None  # a key arrived since the probe: merge instead
    return UpsertResult(inserted=len(rows), updated=0, unchanged=0)


def _merge(
    conn: sa.Connection,
    table: sa.Table,
    stage: sa.Table,
    staged: int,
    names: list[str],
    key: str | Sequence[str],
    touch: str | None,
    casts: dict[str, sa.types.TypeEngine],
) -> UpsertResult:
    keys = [key] if isinstance(key, str) else list(key)
    same_key = sa.and_(*[table.c[k] == stage.c[k] for k in keys])
    existing = int(
        conn.execute(sa.select(sa.func.count()).select_from(stage).where(sa.exists().where(same_key))).scalar_one()
    )
    if not db.is_postgres(conn):
        casts = {}  # SQLite stores JSON as text; a CAST to JSON would mean NUMERIC affinity there
    source_cols: list[sa.ColumnElement[Any]] = [
        sa.cast(stage.c[n], casts[n]) if n in casts else stage.c[n] for n in names
    ]
    insert_names = list(names)
    if touch:
        source_cols.append(sa.func.current_timestamp())
        insert_names.append(touch)
    # ``WHERE true`` keeps SQLite from reading ON CONFLICT as a join clause.
    stmt = db.insert(conn, table).from_select(insert_names, sa.select(*source_cols).where(sa.true()))
    changing = [n for n in names if n not in keys]
    set_: dict[str, sa.ColumnElement[Any]] = {n: stmt.excluded[n] for n in changing}
    if touch:
        set_[touch] = sa.func.current_timestamp()
    distinct = sa.or_(*[table.c[n].is_distinct_from(stmt.excluded[n]) for n in changing])
    result = conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=set_, where=distinct))
    written = result.rowcount if result.rowcount is not None and result.rowcount >= 0 else staged
    inserted = staged - existing
    updated = max(written - inserted, 0)
    return UpsertResult(inserted=inserted, updated=updated, unchanged=existing - updated)


def mark_classified(conn: sa.Connection, table: sa.Table, versions: pd.DataFrame) -> int:
    """Record in a staged table which versions ``lms_activity_events`` processed, and why it rejected some.

    ``versions`` holds ``id, updated_at, reason`` (reason NULL: accepted). A row
    staged again meanwhile (another ``updated_at``) is left alone: that version
    was not processed. Only rows whose marks change are written. Returns how many.
    """
    if versions.empty:
        return 0
    stage = _stage(
        conn,
        f"_stage_marks_{table.name}",
        [
            sa.Column("id", sa.BigInteger),
            sa.Column("updated_at", table.c.updated_at.type),
            sa.Column("reason", sa.Text),
        ],
        versions,
    )
    changed = sa.or_(
        table.c._classified_version.is_distinct_from(table.c.updated_at),
        table.c._rejected_reason.is_distinct_from(stage.c.reason),
    )
    result = conn.execute(
        table.update()
        .where(table.c.id == stage.c.id, table.c.updated_at == stage.c.updated_at, changed)
        .values(_classified_version=table.c.updated_at, _rejected_reason=stage.c.reason)
    )
    return max(result.rowcount or 0, 0)


#: Events that happen once but whose LMS row keeps changing afterwards (a video re-watched).
FIRST_SEEN_EVENT_TYPES = ("content_watched", "content_completed")
#: Their metadata fields that describe the row at the event, kept as first stored (no look-ahead).
FIRST_SEEN_FIELDS = ("progress_percent", "time_spent_seconds")


def upsert_events(conn: sa.Connection, events: pd.DataFrame) -> UpsertResult:
    """Upsert classified events by ``event_key``.

    An event whose time fell back to ``updated_at`` ("first seen") keeps the
    time it was first stored with; a watched or completed content event keeps
    the progress and time spent it was first stored with (the LMS row goes on
    changing when the video is watched again; the event does not).
    """
    if events.empty:
        return UpsertResult(0, 0, 0)
    table = lms_activity_events
    names = [c for c in events.columns if c in table.c and c != "time_is_fallback"]
    if (result := copy_if_all_new(conn, table, events[names], ["event_key"], "updated_at")) is not None:
        return result  # no stored event to keep a first-seen time of
    stage_columns = [sa.Column(n, sa.Text if n == "activity_metadata" else table.c[n].type) for n in names] + [
        sa.Column("time_is_fallback", sa.Boolean)
    ]
    stage = _stage(conn, "_stage_lms_activity_events", stage_columns, events)
    first_seen = sa.select(table.c.timestamp).where(table.c.event_key == stage.c.event_key).scalar_subquery()
    conn.execute(
        stage.update()
        .where(stage.c.time_is_fallback, sa.exists().where(table.c.event_key == stage.c.event_key))
        .values(timestamp=first_seen)
    )
    _keep_first_seen_progress(conn, table, stage)
    return _merge(
        conn,
        table,
        stage,
        len(events),
        names,
        "event_key",
        "updated_at",
        {"activity_metadata": table.c.activity_metadata.type},
    )


def _keep_first_seen_progress(conn: sa.Connection, table: sa.Table, stage: sa.Table) -> None:
    """In staged watched/completed events already stored, put back the stored :data:`FIRST_SEEN_FIELDS`."""
    stored = sa.select(table.c.activity_metadata).where(table.c.event_key == stage.c.event_key).scalar_subquery()
    meta = stage.c.activity_metadata
    value: sa.ColumnElement[Any]
    if db.is_postgres(conn):
        kept = sa.func.jsonb_strip_nulls(
            sa.func.jsonb_build_object(*[x for f in FIRST_SEEN_FIELDS for x in (sa.literal(f), stored.op("->")(f))])
        )
        value = sa.cast(sa.cast(meta, postgresql.JSONB).op("||")(kept), sa.Text)
    else:
        args: list[sa.ColumnElement[Any]] = []
        for f in FIRST_SEEN_FIELDS:
            path = f"$.{f}"
            args += [
                sa.literal(path),
                sa.func.coalesce(sa.func.json_extract(stored, path), sa.func.json_extract(meta, path)),
            ]
        value = sa.func.json_set(meta, *args)
    conn.execute(
        stage.update()
        .where(
            stage.c.event_type.in_(FIRST_SEEN_EVENT_TYPES), sa.exists().where(table.c.event_key == stage.c.event_key)
        )
        .values(activity_metadata=value)
    )
