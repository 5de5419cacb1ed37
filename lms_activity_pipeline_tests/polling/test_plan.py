"""``plan_poll`` on its own: a pure function of an LMS's changed rows, a cursor and the clocks."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from lms_activity_pipeline.domain.cleaning import empty_rejects
from lms_activity_pipeline.polling.plan import Cursor, PollResult, plan_poll

pytestmark = pytest.mark.unit

UTC = dt.UTC
NOW = dt.datetime(2024, 5, 6, 12, 0, tzinfo=UTC)
LOOKBACK = dt.timedelta(minutes=5)


def at(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2024, 5, day, hour, minute, tzinfo=UTC)


class Source:
    """An LMS in memory: per attempts table, rows ``(id, started_at, updated_at)``; its database clock."""

    def __init__(self, now: dt.datetime = NOW) -> None:
        self.now = now
        self.rows: dict[str, list[tuple[int, dt.datetime, dt.datetime]]] = {"attempts": [], "content_attempts": []}

    def add(self, logical: str, row_id: int, started: dt.datetime, updated: dt.datetime) -> Source:
        self.rows[logical] = [r for r in self.rows[logical] if r[0] != row_id] + [(row_id, started, updated)]
        return self

    def frame(self, logical: str) -> pd.DataFrame:
        rows = self.rows[logical]
        return pd.DataFrame(
            {
                "id": pd.Series([r[0] for r in rows], dtype="int64"),
                "started_at": pd.to_datetime([r[1] for r in rows], utc=True),
                "updated_at": pd.to_datetime([r[2] for r in rows], utc=True),
            }
        )

    # --- ChangeSource ---
    def database_now(self) -> dt.datetime:
        return self.now

    def changed_rows(self, logical: str, since: dt.datetime | None) -> tuple[pd.DataFrame, pd.DataFrame]:
        frame = self.frame(logical)
        if since is not None:
            frame = frame[frame["updated_at"] > pd.Timestamp(since)]
        return frame.reset_index(drop=True), empty_rejects()

    def earliest_start(self) -> dt.datetime | None:
        starts = [r[1] for rows in self.rows.values() for r in rows]
        return min(starts) if starts else None

    def high_water_marks(self, until: dt.datetime) -> dict[str, dt.datetime | None]:
        return {k: max((r[2] for r in rows if r[2] <= until), default=None) for k, rows in self.rows.items()}


def poll(
    source: Source, cursor: Cursor, *, timezone: str = "UTC", now: dt.datetime = NOW, start: str = "2024-05-01"
) -> PollResult:
    return plan_poll(source, cursor, timezone=timezone, partitions_start=start, lookback=LOOKBACK, now=now)


@pytest.fixture
def lms() -> Source:
    return Source().add("attempts", 1, at(3, 10), at(3, 11)).add("content_attempts", 1, at(4, 8), at(4, 8, 10))


def test_an_empty_lms_plans_nothing() -> None:
    result = poll(Source(), Cursor())
    assert result.plan is None and result.skip_reason == "The LMS has no attempts yet" and result.cursor.is_empty


def test_the_first_poll_recomputes_history_from_the_oldest_attempt_to_today(lms: Source) -> None:
    result = poll(lms, Cursor())
    plan = result.plan
    assert plan is not None and plan.is_full_history
    assert (plan.first_partition, plan.last_partition) == ("2024-05-03", "2024-05-06")
    assert result.cursor.marks["attempts"].updated_at == pd.Timestamp(at(3, 11)).isoformat()
    assert result.cursor.marks["content_attempts"].updated_at == pd.Timestamp(at(4, 8, 10)).isoformat()


def test_history_is_clamped_to_the_first_partition(lms: Source) -> None:
    plan = poll(lms, Cursor(), start="2024-05-04").plan
    assert plan is not None and plan.first_partition == "2024-05-04"


def test_no_change_keeps_the_cursor_and_says_so(lms: Source) -> None:
    cursor = poll(lms, Cursor()).cursor
    again = poll(lms, cursor)
    assert again.plan is None and again.cursor == cursor
    assert again.skip_reason is not None and again.skip_reason.startswith("No LMS changes")


def test_new_rows_plan_an_incremental_run_over_exactly_their_days(lms: Source) -> None:
    cursor = poll(lms, Cursor()).cursor
    lms.add("attempts", 2, at(5, 23, 30), at(6, 1)).add("content_attempts", 2, at(6, 9), at(6, 9, 15))
    plan = poll(lms, cursor).plan
    assert plan is not None and not plan.is_full_history
    assert (plan.first_partition, plan.last_partition) == ("2024-05-05", "2024-05-06")
    assert plan.rows == 2
    assert plan.changed_until == pd.Timestamp(at(6, 9, 15)).to_pydatetime()
    assert plan.changed_since is not None and plan.changed_since < at(6, 1)
    # The same change always gets the same run key; the cursor moves to the newest row.
    assert poll(lms, cursor).plan.run_key == plan.run_key  # type: ignore[union-attr]
    assert poll(lms, poll(lms, cursor).cursor).plan is None


def test_a_late_commit_inside_the_lookback_is_planned_and_gets_its_own_run_key(lms: Source) -> None:
    cursor = poll(lms, Cursor()).cursor
    lms.add("content_attempts", 5, at(4, 8, 5), at(4, 8, 7))  # older than the mark 08:10, within 5 minutes
    late = poll(lms, cursor).plan
    assert late is not None and (late.first_partition, late.last_partition) == ("2024-05-04", "2024-05-04")
    lms.add("content_attempts", 6, at(4, 8, 6), at(4, 8, 8))  # another one in the same window
    other = poll(lms, cursor).plan
    assert other is not None and other.run_key != late.run_key


def test_a_row_older_than_the_lookback_is_left_to_backfills(lms: Source) -> None:
    cursor = poll(lms, Cursor()).cursor
    lms.add("content_attempts", 7, at(4, 6), at(4, 7))  # 70 minutes before the mark
    assert poll(lms, cursor).plan is None


def test_a_row_from_the_future_never_lifts_the_mark_and_is_planned_once(lms: Source) -> None:
    cursor = poll(lms, Cursor()).cursor
    ahead = NOW + dt.timedelta(minutes=10)  # an app server whose clock runs 10 minutes fast
    lms.add("attempts", 9, NOW - dt.timedelta(minutes=1), ahead)
    first = poll(lms, cursor)
    assert first.plan is not None and first.plan.future_rows == 1 and first.future_rows == 1
    assert pd.Timestamp(first.cursor.marks["attempts"].updated_at) <= pd.Timestamp(NOW)
    assert any("updated_at after the LMS database's now()" in line for line in first.warnings())
    # Seen again while it stays in the future: not planned again. A row written meanwhile with a
    # correct clock (below the future one) is.
    assert poll(lms, first.cursor).plan is None
    lms.add("attempts", 10, NOW - dt.timedelta(seconds=30), NOW - dt.timedelta(seconds=20))
    below = poll(lms, first.cursor).plan
    assert below is not None and below.rows == 1 and below.future_rows == 0


def test_days_are_those_of_the_partition_time_zone() -> None:
    # 02:30 UTC on the 6th is still the 5th in New York.
    lms = Source().add("attempts", 1, at(3, 10), at(3, 11))
    cursor = poll(lms, Cursor(), timezone="America/New_York").cursor
    lms.add("attempts", 2, at(6, 2), at(6, 2, 30))
    plan = poll(lms, cursor, timezone="America/New_York").plan
    assert plan is not None and (plan.first_partition, plan.last_partition) == ("2024-05-05", "2024-05-05")


def test_the_cursor_survives_its_json_form(lms: Source) -> None:
    cursor = poll(lms, Cursor()).cursor
    assert Cursor.from_json(cursor.to_json()) == cursor
    assert Cursor.from_json("not json").is_empty and Cursor.from_json(None).is_empty
