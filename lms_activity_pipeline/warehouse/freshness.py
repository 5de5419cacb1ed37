"""How far ``lms_activity_events`` is behind the LMS: the lag ``lms-activity monitor --stats`` prints.

A change has *reached* ``lms_activity_events`` when the events step classified
that version of the row (``raw_*._classified_version = updated_at``) and did not
reject it (``_rejected_reason`` NULL). The lag is the age, on the LMS's own
clock, of the oldest change that has not:

- an LMS row newer than the newest change that reached the events (never
  staged, or staged while the events step failed or has not run yet), found by
  one index lookup on the LMS's ``updated_at`` (``ORDER BY updated_at LIMIT 1``);
- a staged row not classified in its current version, or rejected by the events
  step (an unknown exam, a score above the maximum), found through the partial
  index ``ix_raw_*_not_in_events``; it counts until a later run accepts it;
- a row dated after the LMS's now (a server clock running fast) not in the
  events yet: age 0, but counted.

Rows rejected while staging (an unreadable value) are not in ``raw_*``: they
count only while newer than every change that reached the events. Rows older
than the newest change that reached the events and never staged (a commit
later than the poll's lookback) are invisible here, as they are to the poll:
they are left to backfills. Whoever ingests (the sensor, the CLI, a backfill),
the lag is the same: it is read from the data, not from a cursor.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.lms.queries import time_cmp
from lms_activity_pipeline.lms.reader import LMSReader
from lms_activity_pipeline.warehouse import schema as wh

#: The staged copy of each attempts table, by logical name.
STAGED = {"attempts": wh.raw_exam_attempts, "content_attempts": wh.raw_content_attempts}


@dataclass(frozen=True)
class Freshness:
    """What has not reached ``lms_activity_events`` yet, on the LMS's clock."""

    lms_now: dt.datetime
    #: The LMS has attempts at all (else there is no lag to speak of).
    lms_has_rows: bool
    #: ``updated_at`` of the oldest change not in the events (None: every change is there).
    oldest_pending: dt.datetime | None
    #: Staged rows not in the events, and of those, the ones the events step rejected.
    staged_pending: int
    staged_rejected: int
    #: Rows dated after the LMS's now, how far ahead the furthest, and how many of them are not in the events.
    future_rows: int
    future_ahead: dt.timedelta | None
    future_pending: int

    @property
    def lag_seconds(self) -> float | None:
        if not self.lms_has_rows:
            return None
        if self.oldest_pending is None:
            return 0.0
        return max(0.0, (self.lms_now - self.oldest_pending).total_seconds())


def reached_events(table: sa.Table) -> sa.ColumnElement[bool]:
    """Staged rows whose current version is in ``lms_activity_events``."""
    return sa.and_(table.c._classified_version == table.c.updated_at, table.c._rejected_reason.is_(None))


def freshness(lms: LMSReader, warehouse: Engine) -> Freshness:
    """Compare the LMS with the staged rows' classification marks (index lookups on both sides)."""
    lms_now = to_utc(lms.database_now())
    oldest: list[dt.datetime] = []
    pending = rejected = future_rows = future_pending = 0
    furthest: dt.datetime | None = None
    has_rows = False
    with warehouse.connect() as conn:
        for logical, table in STAGED.items():
            head = to_utc(
                conn.execute(
                    sa.select(sa.func.max(table.c.updated_at)).where(
                        reached_events(table), time_cmp(table.c.updated_at, "<=", lms_now, "native")
                    )
                ).scalar()
            )
            newer = lms.oldest_change(logical, head, lms_now)  # in the LMS, after the newest change in the events
            staged = to_utc(
                conn.execute(sa.select(sa.func.min(table.c.updated_at)).where(wh.not_in_events(table))).scalar()
            )
            oldest += [t for t in (newer, staged) if t is not None]
            pending += _count(conn, table, wh.not_in_events(table))
            rejected += _count(
                conn,
                table,
                sa.and_(table.c._classified_version == table.c.updated_at, table.c._rejected_reason.is_not(None)),
            )
            future, _ = lms.changed_rows(logical, lms_now)
            waiting = _not_reached(conn, table, future)
            future_rows, future_pending = future_rows + len(future), future_pending + waiting
            if waiting:
                oldest.append(lms_now)  # dated in the future: age 0, but not in the events
            if not future.empty:
                ahead = future["updated_at"].max().to_pydatetime()
                furthest = ahead if furthest is None else max(furthest, ahead)
            has_rows = has_rows or head is not None or newer is not None or not future.empty
    return Freshness(
        lms_now=lms_now,
        lms_has_rows=has_rows,
        oldest_pending=min(oldest) if oldest else None,
        staged_pending=pending,
        staged_rejected=rejected,
        future_rows=future_rows,
        future_ahead=None if furthest is None else furthest - lms_now,
        future_pending=future_pending,
    )


def _count(conn: Connection, table: sa.Table, where: sa.ColumnElement[bool]) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one())


def _not_reached(conn: Connection, table: sa.Table, rows: pd.DataFrame) -> int:
    """How many of the LMS ``rows`` (``id, updated_at``) are not in the events in that version."""
    if rows.empty:
        return 0
    stmt = sa.select(table.c.id, table.c.updated_at).where(
        table.c.id.in_(rows["id"].astype(int).tolist()), reached_events(table)
    )
    there = {(int(i), pd.Timestamp(to_utc(at))) for i, at in conn.execute(stmt)}
    return sum((int(i), at) not in there for i, at in zip(rows["id"], rows["updated_at"], strict=True))
