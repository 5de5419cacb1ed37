"""One poll of the LMS: what changed since the cursor, and which ingest run covers it.

The sensor and ``lms-activity monitor --once/--daemon`` both call
:func:`plan_poll`; neither has its own change detection.

The cursor keeps, per attempts table, the high-water mark ``M`` of
``updated_at`` and a digest of the rows in the lookback window
``(M - lookback, M]``. A tick reads only rows with ``updated_at > M - lookback``
(an index range scan): rows above ``M`` are new; if the digest of the window
changed, a row committed late with an older ``updated_at`` arrived, and the
window is reprocessed too. The first poll (no cursor) plans one recompute run
over the LMS's whole history from two index lookups and one aggregate
(``min(started_at)``, which has no index in the reference schema: one scan, on
a first start only); no poll ever loads a whole table, and the ticks after it
are index range scans (tested on PostgreSQL by EXPLAIN of every query).

**Rows from the future.** ``M`` never passes the LMS database's own clock
(``now()``, asked every poll): a row written by an app server whose clock runs
fast (``updated_at`` after the LMS's now) would otherwise lift ``M`` past every
row the other servers write until that time, and those would never be read.
Such rows are handed to a run when first seen and remembered in the cursor
(a hash of ``id, updated_at`` each, up to :data:`MAX_TRACKED_FUTURE_ROWS`, and a
digest of all rows above ``M``), so they are not requested again while they
stay in the future; every poll reports how many there are and how far ahead.
One dated after today's partition (a clock days fast) waits until its day's
partition exists: a run now would drop its events.
Rows whose times cannot be read at all (``infinity``, BC dates, garbage) are
reported with the reason and never move the cursor.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from lms_activity_pipeline import names
from lms_activity_pipeline.domain.cleaning import empty_rejects

SOURCES = ("attempts", "content_attempts")
DEFAULT_LOOKBACK = dt.timedelta(minutes=5)


#: Rows dated in the future remembered one by one per table; beyond, they are read again with each change.
MAX_TRACKED_FUTURE_ROWS = 1000


class ChangeSource(Protocol):
    """What polling needs from the LMS (implemented by ``LMSResource``)."""

    def database_now(self) -> dt.datetime: ...

    def changed_rows(self, logical: str, since: dt.datetime | None) -> tuple[pd.DataFrame, pd.DataFrame]: ...

    def earliest_start(self) -> dt.datetime | None: ...

    def high_water_marks(self, until: dt.datetime) -> dict[str, dt.datetime | None]: ...

    def rows_by_id(self, logical: str, ids: Collection[int]) -> tuple[pd.DataFrame, pd.DataFrame]: ...


@dataclass(frozen=True)
class Mark:
    """High-water mark of one table, the digest of its lookback window, and the rows above it.

    Only rows dated after the LMS's now can be above the mark: ``above_digest``
    is the digest of all of them, ``future`` the hashes of those already handed
    to a run (at most :data:`MAX_TRACKED_FUTURE_ROWS`).
    """

    updated_at: str | None = None
    window_digest: str = ""
    above_digest: str = ""
    future: tuple[str, ...] = ()

    def to_json(self) -> list[object]:
        data: list[object] = [self.updated_at, self.window_digest]
        return [*data, self.above_digest, list(self.future)] if self.above_digest or self.future else data

    @classmethod
    def from_json(cls, value: list[Any]) -> Mark:
        updated_at, window_digest, *rest = value  # cursors written before the future rows: two items
        return cls(updated_at, window_digest, rest[0] if rest else "", tuple(rest[1]) if len(rest) > 1 else ())


@dataclass(frozen=True)
class Cursor:
    marks: dict[str, Mark] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({k: m.to_json() for k, m in sorted(self.marks.items())})

    @classmethod
    def from_json(cls, text: str | None) -> Cursor:
        """Parse a stored cursor; an empty or unreadable one means "start from scratch".

        Keys starting with ``_`` belong to the sensor (see ``monitoring/followup.py``).
        """
        if not text:
            return cls()
        try:
            data = json.loads(text)
            return cls({k: Mark.from_json(v) for k, v in data.items() if not k.startswith("_")})
        except (ValueError, TypeError, KeyError, IndexError):
            return cls()

    @property
    def is_empty(self) -> bool:
        return not any(m.updated_at for m in self.marks.values())


@dataclass(frozen=True)
class PollPlan:
    """An ingest run to launch: partition days, incremental window and its run key."""

    first_partition: str
    last_partition: str
    changed_since: dt.datetime | None
    changed_until: dt.datetime | None
    rows: int
    cursor: Cursor
    #: Digest of the changed rows (source, id, updated_at): a different change never shares a run key.
    change_digest: str = ""
    #: Of ``rows``, those dated after the LMS's now (tagged on the run: ``lms/rows_dated_in_future``).
    future_rows: int = 0

    @property
    def is_full_history(self) -> bool:
        return self.changed_since is None and self.changed_until is None

    @property
    def run_key(self) -> str:
        """The same change always gives the same key; another change (even one that fits the same
        window, like a late commit inside the lookback) gives another. A history run: the head too."""
        basis = f"{self.first_partition}|{self.last_partition}|{self.changed_since}|{self.changed_until}"
        basis += f"|{self.change_digest}"
        if self.is_full_history:
            basis += "|" + self.cursor.to_json()
        return "lms-" + hashlib.sha1(basis.encode()).hexdigest()[:20]

    def run_tags(self) -> dict[str, str]:
        """What the run's tags say about the change it ingests."""
        tags = {names.CHANGED_ROWS_TAG: str(self.rows)}
        if self.future_rows:
            tags[names.FUTURE_ROWS_TAG] = str(self.future_rows)
        return tags

    def describe(self) -> str:
        days = (
            self.first_partition
            if self.first_partition == self.last_partition
            else f"{self.first_partition}..{self.last_partition}"
        )
        if self.changed_since is None or self.changed_until is None:
            return f"first poll: recompute history {days}"
        return (
            f"{self.rows} changed LMS rows touching {days} "
            f"(updated_at in ({self.changed_since.isoformat()}, {self.changed_until.isoformat()}])"
        )


@dataclass(frozen=True)
class PollResult:
    """The plan (or why there is none), the cursor after it, and what the poll saw that needs saying."""

    plan: PollPlan | None
    cursor: Cursor
    skip_reason: str | None = None
    #: Rows whose ``updated_at`` is after the LMS's now (a fast clock), and the furthest ahead.
    future_rows: int = 0
    future_ahead: dt.timedelta | None = None
    #: Rows whose times cannot be read (``source, id, reason``): never ingested by an incremental run.
    unreadable: pd.DataFrame = field(default_factory=empty_rejects)
    #: Of the rows from the future, those dated after today (``LMS_TIMEZONE``): they wait for their day.
    waiting_rows: int = 0

    def warnings(self) -> list[str]:
        """One line per problem, for the sensor's log and the CLI's output."""
        lines = []
        if self.future_rows:
            ahead = int(self.future_ahead.total_seconds()) if self.future_ahead is not None else 0
            waiting = (
                f"; {self.waiting_rows} of them dated after today wait for their day's partition"
                if self.waiting_rows
                else ""
            )
            lines.append(
                f"{self.future_rows} LMS row(s) have an updated_at after the LMS database's now(), up to {ahead} s ahead "
                f"(a server clock running fast?): ingested once when first seen; the cursor stays at now(){waiting}"
            )
        if not self.unreadable.empty:
            shown = "; ".join(
                f"{r.source} id={r.id}: {r.reason}" for r in self.unreadable.head(5).itertuples(index=False)
            )
            more = f" and {len(self.unreadable) - 5} more" if len(self.unreadable) > 5 else ""
            lines.append(f"{len(self.unreadable)} changed LMS row(s) skipped, a value cannot be read: {shown}{more}")
        return lines


def _row_hashes(rows: pd.DataFrame) -> np.ndarray:
    """A 64-bit hash of each row's ``(id, updated_at)`` (vectorised)."""
    pairs = pd.DataFrame(
        {
            "id": rows["id"].astype("int64").to_numpy(),
            "at": rows["updated_at"].dt.tz_convert("UTC").astype("int64").to_numpy(),
        }
    )
    return pd.util.hash_pandas_object(pairs, index=False).to_numpy()


def _digest(rows: pd.DataFrame) -> str:
    """Order-independent digest of the rows' ``(id, updated_at)`` pairs."""
    if rows.empty:
        return ""
    return hashlib.sha1(np.sort(_row_hashes(rows)).tobytes()).hexdigest()[:16]


def _hex(hashes: np.ndarray) -> list[str]:
    return [f"{h:016x}" for h in hashes.tolist()]


def _day(ts: pd.Timestamp | dt.datetime, tz: ZoneInfo) -> str:
    return pd.Timestamp(ts).tz_convert(tz).date().isoformat()


def _clamp(day: str, first_day: str, today: str) -> str:
    return min(max(day, first_day), today)


def plan_poll(
    source: ChangeSource,
    cursor: Cursor,
    *,
    timezone: str,
    partitions_start: str,
    lookback: dt.timedelta = DEFAULT_LOOKBACK,
    now: dt.datetime | None = None,
) -> PollResult:
    """Decide the next ingest run (or why there is none) and the cursor after it.

    ``now`` is the pipeline's clock (which partition is today); marks follow the LMS database's clock.
    """
    tz = ZoneInfo(timezone)
    now = now or dt.datetime.now(dt.UTC)
    today = _day(now, tz)
    clocks = _Clocks.of(source.database_now(), now, tz)
    if cursor.is_empty:
        return _plan_history(source, lookback, tz, partitions_start, today, clocks)

    marks: dict[str, Mark] = {}
    changed: list[pd.DataFrame] = []
    digests: list[str] = []
    seen = _Seen(clocks)
    for logical in SOURCES:
        old = cursor.marks.get(logical, Mark())
        mark = pd.Timestamp(old.updated_at) if old.updated_at else None
        rows = seen.add(*source.changed_rows(logical, None if mark is None else (mark - lookback).to_pydatetime()))
        marks[logical], rows_changed = _table_change(rows, old, mark, clocks, lookback)
        if not rows_changed.empty:
            changed.append(rows_changed)
            digests.append(f"{logical}:{_digest(rows_changed)}")
    new_cursor = Cursor(marks)
    touched = pd.concat(changed, ignore_index=True) if changed else pd.DataFrame()
    if touched.empty:
        since = ", ".join(f"{k} > {m.updated_at}" for k, m in new_cursor.marks.items() if m.updated_at)
        return seen.result(None, new_cursor, f"No LMS changes ({since}, lookback {int(lookback.total_seconds())} s)")

    first = _clamp(_day(touched["started_at"].min(), tz), partitions_start, today)
    last = _clamp(_day(touched["updated_at"].max(), tz), partitions_start, today)
    # A second of overlap: SQLite compares through julianday(), a float with ~0.1 ms resolution.
    since = (touched["updated_at"].min() - pd.Timedelta(seconds=1)).to_pydatetime()
    until = touched["updated_at"].max().to_pydatetime()
    future = int((touched["updated_at"] > clocks.lms_now).sum())
    plan = PollPlan(first, last, since, until, len(touched), new_cursor, ",".join(digests), future)
    return seen.result(plan, new_cursor)


@dataclass(frozen=True)
class _Clocks:
    """The LMS database's now, and the end of the newest partition (today in ``LMS_TIMEZONE``, pipeline clock)."""

    lms_now: pd.Timestamp
    horizon: pd.Timestamp

    @classmethod
    def of(cls, lms_now: dt.datetime, now: dt.datetime, tz: ZoneInfo) -> _Clocks:
        tomorrow = pd.Timestamp(now).tz_convert(tz).normalize() + pd.DateOffset(days=1)
        return cls(pd.Timestamp(lms_now).tz_convert("UTC"), tomorrow.tz_convert("UTC"))

    def can_ingest(self, rows: pd.DataFrame) -> pd.Series:
        """Rows a run can take now: a row changed after the newest partition's end (a clock days fast)
        would land in a partition that does not exist yet, and its events would be dropped."""
        return rows["updated_at"] < self.horizon


def _table_change(
    rows: pd.DataFrame, old: Mark, mark: pd.Timestamp | None, clocks: _Clocks, lookback: dt.timedelta
) -> tuple[Mark, pd.DataFrame]:
    """One table's mark after ``rows`` (read from ``mark - lookback`` on) and the rows to ingest."""
    if rows.empty:
        return old, rows
    newer = pd.Series(True, index=rows.index) if mark is None else rows["updated_at"] > mark
    above, window = rows[newer], rows[~newer]
    late = mark is not None and _digest(window) != old.window_digest
    fresh = above[clocks.can_ingest(above)]
    if old.future and not fresh.empty:  # rows from the future already handed to a run
        fresh = fresh[~pd.Index(_hex(_row_hashes(fresh))).isin(old.future)]
    if len(old.future) >= MAX_TRACKED_FUTURE_ROWS and _digest(above) == old.above_digest:
        fresh = fresh.iloc[:0]  # more rows from the future than the cursor remembers, and none changed
    if not late and fresh.empty:
        # Nothing new above the mark and the window as it was: the mark and its digests stay the same.
        return old, rows.iloc[:0]
    new = _mark(rows, lookback, clocks, mark)
    return new, pd.concat([window, fresh], ignore_index=True) if late else fresh


def _mark(rows: pd.DataFrame, lookback: dt.timedelta, clocks: _Clocks, previous: pd.Timestamp | None) -> Mark:
    """The mark after ``rows``: their newest ``updated_at`` not after the LMS's now (else the previous
    mark, else now), the digest of its lookback window, and the rows above it (all from the future):
    their digest, and the hashes of those handed to a run (not those waiting for their day)."""
    present = rows[rows["updated_at"] <= clocks.lms_now]
    newest = (
        present["updated_at"].max() if not present.empty else (previous if previous is not None else clocks.lms_now)
    )
    above = rows[rows["updated_at"] > newest]
    handed = above[clocks.can_ingest(above)].sort_values(["updated_at", "id"]).head(MAX_TRACKED_FUTURE_ROWS)
    window = present[present["updated_at"] > newest - lookback]
    tracked = _hex(_row_hashes(handed)) if not handed.empty else []
    return Mark(newest.isoformat(), _digest(window), _digest(above), tuple(sorted(tracked)))


@dataclass
class _Seen:
    """What a poll saw beyond its plan: rows from the future, rows it cannot read."""

    clocks: _Clocks
    future_rows: int = 0
    waiting_rows: int = 0
    furthest: pd.Timestamp | None = None
    unreadable: list[pd.DataFrame] = field(default_factory=list)

    def add(self, rows: pd.DataFrame, unreadable: pd.DataFrame) -> pd.DataFrame:
        future = rows["updated_at"][rows["updated_at"] > self.clocks.lms_now]
        if len(future):
            self.future_rows += len(future)
            self.waiting_rows += int((future >= self.clocks.horizon).sum())
            self.furthest = max(future.max(), self.furthest) if self.furthest is not None else future.max()
        if not unreadable.empty:
            self.unreadable.append(unreadable)
        return rows

    def result(self, plan: PollPlan | None, cursor: Cursor, skip_reason: str | None = None) -> PollResult:
        ahead = None if self.furthest is None else (self.furthest - self.clocks.lms_now).to_pytimedelta()
        unreadable = pd.concat(self.unreadable, ignore_index=True) if self.unreadable else empty_rejects()
        return PollResult(plan, cursor, skip_reason, self.future_rows, ahead, unreadable, self.waiting_rows)


def _plan_history(
    source: ChangeSource,
    lookback: dt.timedelta,
    tz: ZoneInfo,
    partitions_start: str,
    today: str,
    clocks: _Clocks,
) -> PollResult:
    """First poll: one recompute run from the oldest attempt's day to today; the cursor at the head
    (never past the LMS's now)."""
    marks: dict[str, Mark] = {}
    seen = _Seen(clocks)
    for logical, head in source.high_water_marks(clocks.lms_now.to_pydatetime()).items():
        rows = seen.add(*source.changed_rows(logical, None if head is None else head - lookback))
        if head is None and rows.empty:
            marks[logical] = Mark()
        else:  # the head itself may be a row the poll cannot read (a started_at of 'infinity'): the mark stays there
            marks[logical] = _mark(rows, lookback, clocks, None if head is None else pd.Timestamp(head))
    cursor = Cursor(marks)
    earliest = source.earliest_start()
    if cursor.is_empty or earliest is None:
        return seen.result(None, Cursor(), "The LMS has no attempts yet")
    first = _clamp(_day(earliest, tz), partitions_start, today)
    return seen.result(PollPlan(first, today, None, None, 0, cursor), cursor)


def plan_announced(
    rows: pd.DataFrame,
    covered_by: PollPlan | None,
    cursor: Cursor,
    *,
    timezone: str,
    partitions_start: str,
    now: dt.datetime,
) -> PollPlan | None:
    """An ingest run for LMS rows announced by webhooks (``source, id, started_at, updated_at``), however
    old their ``updated_at``: only the rows the poll's own plan ``covered_by`` does not ingest already.

    Its window is the announced rows' ``updated_at`` range, so it reads those rows and the few changed
    in between; its run key comes from their digest (another announcement, another run).
    """
    if rows.empty:
        return None
    if covered_by is not None:
        lo, hi = covered_by.changed_since, covered_by.changed_until
        if lo is None or hi is None:  # a history run reads every row
            return None
        inside = (rows["updated_at"] > pd.Timestamp(lo)) & (rows["updated_at"] <= pd.Timestamp(hi))
        rows = rows[~inside]
        if rows.empty:
            return None
    tz = ZoneInfo(timezone)
    today = _day(now, tz)
    first = _clamp(_day(rows["started_at"].min(), tz), partitions_start, today)
    last = _clamp(_day(rows["updated_at"].max(), tz), partitions_start, today)
    since = (rows["updated_at"].min() - pd.Timedelta(seconds=1)).to_pydatetime()
    until = rows["updated_at"].max().to_pydatetime()
    digest = ",".join(f"webhook-{logical}:{_digest(part)}" for logical, part in rows.groupby("source", sort=True))
    return PollPlan(first, last, since, until, len(rows), cursor, digest)
