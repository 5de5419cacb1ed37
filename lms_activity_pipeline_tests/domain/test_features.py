"""Feature logic in pure pandas: hand-checked values and window-split invariance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES
from lms_activity_pipeline.domain.features import (
    HISTORY_COLUMNS,
    LOOKBACK,
    History,
    daily_activity,
    event_features,
)

pytestmark = pytest.mark.unit


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def frame(rows: list[tuple]) -> pd.DataFrame:
    """Events from ``(event_id, student_id, event_type, time, activity_id, percentage, attempt, progress, spent)``."""
    out = pd.DataFrame(
        rows,
        columns=[
            "event_id",
            "student_id",
            "event_type",
            "timestamp",
            "activity_id",
            "percentage",
            "attempt_number",
            "progress_percent",
            "time_spent_seconds",
        ],
    )
    for col in ("event_id", "student_id", "activity_id", "attempt_number", "time_spent_seconds"):
        out[col] = out[col].astype("Int64")
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
    out["percentage"] = out["percentage"].astype("float64")
    out["progress_percent"] = out["progress_percent"].astype("float64")
    out["event_key"] = "k" + out["event_id"].astype("string")
    out["student_username"] = "s" + out["student_id"].astype("string")
    out["course_id"] = pd.array([100] * len(out), dtype="Int64")
    out["processed_for_ai"] = out["event_id"] % 2 == 0
    return out


def history_before(events: pd.DataFrame, start: pd.Timestamp, students: pd.Series) -> History:
    """The reference semantics of the warehouse's history queries, in pandas."""
    mine = events[events["student_id"].isin(students) & (events["timestamp"] < start)]
    cutoff = start - LOOKBACK
    older = mine[mine["timestamp"] < cutoff]
    failed = older[older["event_type"] == "exam_failed"]
    return History(
        recent=mine.loc[mine["timestamp"] >= cutoff, HISTORY_COLUMNS],
        last_event_at=older.groupby("student_id", as_index=False)["timestamp"]
        .max()
        .rename(columns={"timestamp": "last_event_at"}),
        failures=failed.groupby(["student_id", "activity_id"], as_index=False)
        .size()
        .rename(columns={"size": "failures"}),
    )


FAIL_FAIL_PASS = frame(
    [
        # student 1, exam 200: fails twice (the second attempt straddles midnight), then passes
        (1, 1, "exam_started", "2024-05-03 10:00", 200, None, 1, None, None),
        (2, 1, "exam_completed", "2024-05-03 10:30", 200, None, 1, None, 1800),
        (3, 1, "exam_failed", "2024-05-03 11:00", 200, 40.0, 1, None, 1800),
        (4, 1, "exam_started", "2024-05-03 23:55", 200, None, 2, None, None),
        (5, 1, "exam_completed", "2024-05-04 00:05", 200, None, 2, None, 600),
        (6, 1, "exam_failed", "2024-05-04 00:05", 200, 44.0, 2, None, 600),
        (7, 1, "exam_started", "2024-05-12 09:00", 200, None, 3, None, None),
        (8, 1, "exam_passed", "2024-05-12 09:40", 200, 80.0, 3, None, 2400),
        # student 2: a single content event, no history at all
        (9, 2, "content_completed", "2024-05-04 08:00", 300, None, None, 100.0, 700),
    ]
)


def test_hand_checked_features() -> None:
    got = event_features(FAIL_FAIL_PASS, History.empty(), "UTC").set_index("event_id")
    exam = got.loc[range(1, 9)]
    assert exam["prior_failures"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    assert got.loc[8, "attempt_number"] == 3 and bool(got.loc[8, "passed"]) and got.loc[8, "score_pct"] == 80.0
    assert bool(got.loc[6, "passed"]) is False and got.loc[6, "score_pct"] == 44.0
    assert pd.isna(got.loc[5, "score_pct"]) and pd.isna(got.loc[5, "passed"])  # not graded yet at submission
    assert pd.isna(got.loc[4, "time_spent_seconds"]) and got.loc[5, "time_spent_seconds"] == 600
    assert got.loc[5, "seconds_since_prev_event"] == 600  # 23:55 -> 00:05, across midnight
    assert got.loc[6, "seconds_since_prev_event"] == 0  # same instant, ordered by id
    assert pd.isna(got.loc[1, "seconds_since_prev_event"])
    assert exam["student_events_7d"].tolist() == [0, 1, 2, 3, 4, 5, 0, 1]  # 05-12 is > 7 days after 05-04
    assert got.loc[7, "seconds_since_prev_event"] == (ts("2024-05-12 09:00") - ts("2024-05-04 00:05")).total_seconds()
    content = got.loc[9]
    assert pd.isna(content["prior_failures"]) and pd.isna(content["attempt_number"]) and pd.isna(content["passed"])
    assert content["progress_pct"] == 100.0 and content["time_spent_seconds"] == 700
    assert pd.isna(content["seconds_since_prev_event"]) and content["student_events_7d"] == 0
    assert (content["hour_of_day"], content["day_of_week"]) == (8, 5)  # Saturday


def test_local_time_features_use_the_timezone() -> None:
    got = event_features(FAIL_FAIL_PASS, History.empty(), "America/New_York").set_index("event_id")
    assert (got.loc[5, "hour_of_day"], got.loc[5, "day_of_week"]) == (20, 4)  # Friday 20:05 in New York


def test_day_windows_with_history_equal_one_pass_over_everything() -> None:
    """Splitting into daily windows (any order) with the history gives the same features."""
    rng = np.random.default_rng(7)
    n = 600
    times = ts("2024-05-01") + pd.to_timedelta(rng.integers(0, 20 * 24 * 60, n), unit="min")
    types = rng.choice(list(ALL_EVENT_TYPES), n)
    events = frame(
        [
            (i + 1, int(rng.integers(1, 8)), t, times[i], int(rng.integers(200, 203)), 50.0, 1, 95.0, 60)
            for i, t in enumerate(types)
        ]
    )
    events.loc[::17, "timestamp"] = events.loc[::17, "timestamp"].dt.floor("h")  # plenty of ties
    whole = event_features(events, History.empty(), "UTC").set_index("event_id")

    parts = []
    for day in pd.date_range("2024-05-01", "2024-05-21", freq="D", tz="UTC")[::-1]:
        window = events[(events["timestamp"] >= day) & (events["timestamp"] < day + pd.Timedelta(days=1))]
        if len(window):
            parts.append(event_features(window, history_before(events, day, window["student_id"]), "UTC"))
    split = pd.concat(parts).set_index("event_id").loc[whole.index]
    pd.testing.assert_frame_equal(split, whole, check_dtype=False)


def test_daily_activity_counts_and_content_minutes() -> None:
    daily = daily_activity(FAIL_FAIL_PASS, "UTC").set_index(["student_id", "day"])
    may3 = daily.loc[(1, pd.Timestamp("2024-05-03").date())]
    assert may3["events_total"] == 4 and may3["exam_started_count"] == 2 and may3["exam_failed_count"] == 1
    assert may3["exams_failed"] == 1 and may3["mean_score_pct"] == 40.0
    assert may3["first_event_at"] == ts("2024-05-03 10:00") and may3["last_event_at"] == ts("2024-05-03 23:55")
    may4 = daily.loc[(1, pd.Timestamp("2024-05-04").date())]
    assert may4["events_total"] == 2 and may4["mean_score_pct"] == 44.0
    content = daily.loc[(2, pd.Timestamp("2024-05-04").date())]
    assert content["content_minutes"] == pytest.approx(700 / 60) and content["content_completed_count"] == 1
    assert pd.isna(content["mean_score_pct"]) and content["student_username"] == "s2"
    assert len(daily) == 4


def test_daily_days_follow_the_timezone() -> None:
    daily = daily_activity(FAIL_FAIL_PASS, "Asia/Tokyo")  # 23:55 UTC on 05-03 is 08:55 on 05-04 in Tokyo
    may4 = daily.set_index(["student_id", "day"]).loc[(1, pd.Timestamp("2024-05-04").date())]
    assert may4["events_total"] == 3 and may4["exam_started_count"] == 1


def test_no_events_give_empty_frames() -> None:
    empty = FAIL_FAIL_PASS.iloc[0:0]
    assert event_features(empty, History.empty(), "UTC").empty
    assert daily_activity(empty, "UTC").empty


def test_whole_numbers_stored_as_floats_are_accepted() -> None:
    """Metadata read as JSON numbers may come back as 2.0; the features still hold integers."""
    events = FAIL_FAIL_PASS.assign(
        attempt_number=FAIL_FAIL_PASS["attempt_number"].astype("float64"),
        time_spent_seconds=FAIL_FAIL_PASS["time_spent_seconds"].astype("float64"),
    )
    got = event_features(events, History.empty(), "UTC").set_index("event_id")
    assert str(got["attempt_number"].dtype) == "Int64" and got.loc[8, "attempt_number"] == 3
    assert got.loc[8, "time_spent_seconds"] == 2400
