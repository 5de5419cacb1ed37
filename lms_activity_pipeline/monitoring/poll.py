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
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Protocol
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

SOURCES = ("attempts", "content_attempts")
DEFAULT_LOOKBACK = dt.timedelta(minutes=5)


class ChangeSource(Protocol):
    """What polling needs from the LMS (implemented by ``LMSResource``)."""

    def changed_rows(self, logical: str, since: dt.datetime | None) -> pd.DataFrame: ...

    def earliest_start(self) -> dt.datetime | None: ...

    def high_water_marks(self) -> dict[str, dt.datetime | None]: ...


@dataclass(frozen=True)
class Mark:
    """High-water mark of one table and the digest of its lookback window."""

    updated_at: str | None = None
    window_digest: str = ""


@dataclass(frozen=True)
class Cursor:
    marks: dict[str, Mark] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({k: [m.updated_at, m.window_digest] for k, m in sorted(self.marks.items())})

    @classmethod
    def from_json(cls, text: str | None) -> Cursor:
        """Parse a stored cursor; an empty or unreadable one means "start from scratch".

        Keys starting with ``_`` belong to the sensor (see ``monitoring/followup.py``).
        """
        if not text:
            return cls()
        try:
            data = json.loads(text)
            return cls({k: Mark(v[0], v[1]) for k, v in data.items() if not k.startswith("_")})
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

    def describe(self) -> str:
        days = self.first_partition if self.first_partition == self.last_partition else f"{self.first_partition}..{self.last_partition}"
        if self.is_full_history:
            return f"first poll: recompute history {days}"
        return f"{self.rows} changed LMS rows touching {days} (updated_at in ({self.changed_since.isoformat()}, {self.changed_until.isoformat()}])"


@dataclass(frozen=True)
class PollResult:
    plan: PollPlan | None
    cursor: Cursor
    skip_reason: str | None = None


def _digest(rows: pd.DataFrame) -> str:
    """Order-independent digest of the rows' ``(id, updated_at)`` pairs (vectorised hashing)."""
    if rows.empty:
        return ""
    pairs = pd.DataFrame(
        {"id": rows["id"].astype("int64").to_numpy(), "at": rows["updated_at"].dt.tz_convert("UTC").astype("int64").to_numpy()}
    )
    hashed = np.sort(pd.util.hash_pandas_object(pairs, index=False).to_numpy())
    return hashlib.sha1(hashed.tobytes()).hexdigest()[:16]


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
    """Decide the next ingest run (or why there is none) and the cursor after it."""
    tz = ZoneInfo(timezone)
    now = now or dt.datetime.now(dt.UTC)
    today = _day(now, tz)
    if cursor.is_empty:
        return _plan_history(source, lookback, tz, partitions_start, today)

    marks: dict[str, Mark] = {}
    changed: list[pd.DataFrame] = []
    digests: list[str] = []
    for logical in SOURCES:
        old = cursor.marks.get(logical, Mark())
        mark = pd.Timestamp(old.updated_at) if old.updated_at else None
        rows = source.changed_rows(logical, None if mark is None else (mark - lookback).to_pydatetime())
        if rows.empty:
            marks[logical] = old
            continue
        if mark is None:
            marks[logical] = _mark(rows, lookback)
            changed.append(rows)
            digests.append(f"{logical}:{_digest(rows)}")
            continue
        fresh = rows[rows["updated_at"] > mark]
        late = _digest(rows[rows["updated_at"] <= mark] if len(fresh) else rows) != old.window_digest
        if fresh.empty and not late:
            # Nothing new and the window as it was: the mark and its window digest stay the same.
            marks[logical] = old
            continue
        marks[logical] = _mark(rows, lookback)
        changed.append(rows if late else fresh)
        digests.append(f"{logical}:{_digest(changed[-1])}")
    new_cursor = Cursor(marks)
    touched = pd.concat(changed, ignore_index=True) if changed else pd.DataFrame()
    if touched.empty:
        since = ", ".join(f"{k} > {m.updated_at}" for k, m in new_cursor.marks.items() if m.updated_at)
        return PollResult(None, new_cursor, f"No LMS changes ({since}, lookback {int(lookback.total_seconds())} s)")

    first = _clamp(_day(touched["started_at"].min(), tz), partitions_start, today)
    last = _clamp(_day(touched["updated_at"].max(), tz), partitions_start, today)
    # A second of overlap: SQLite compares through julianday(), a float with ~0.1 ms resolution.
    since = (touched["updated_at"].min() - pd.Timedelta(seconds=1)).to_pydatetime()
    until = touched["updated_at"].max().to_pydatetime()
    plan = PollPlan(first, last, since, until, len(touched), new_cursor, change_digest=",".join(digests))
    return PollResult(plan, new_cursor)


def _mark(rows: pd.DataFrame, lookback: dt.timedelta) -> Mark:
    """The mark after ``rows``: their newest ``updated_at`` and the digest of its lookback window."""
    newest = rows["updated_at"].max()
    return Mark(newest.isoformat(), _digest(rows[rows["updated_at"] > newest - lookback]))


def _plan_history(
    source: ChangeSource, lookback: dt.timedelta, tz: ZoneInfo, partitions_start: str, today: str
) -> PollResult:
    """First poll: one recompute run from the oldest attempt's day to today; the cursor at the head."""
    marks: dict[str, Mark] = {}
    for logical, head in source.high_water_marks().items():
        if head is None:
            marks[logical] = Mark()
            continue
        marks[logical] = _mark(source.changed_rows(logical, head - lookback), lookback)
    cursor = Cursor(marks)
    earliest = source.earliest_start()
    if cursor.is_empty or earliest is None:
        return PollResult(None, Cursor(), "The LMS has no attempts yet")
    first = _clamp(_day(earliest, tz), partitions_start, today)
    return PollResult(PollPlan(first, today, None, None, 0, cursor), cursor)

