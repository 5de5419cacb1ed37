"""Model-ready features of activity events and per-student daily activity, vectorised.

Pure pandas, no Dagster, no database. A feature row only carries what was
known at its event's time (no look-ahead): a score appears on the
``exam_passed``/``exam_failed`` event, not on the ``exam_started`` event of
the same attempt.

"Earlier" means earlier in ``(timestamp, event_id)`` order, so events at the
same instant are ordered by id and every event has one well-defined
predecessor. Features that look back (previous event, events in the last
7 days, prior failures) are computed over the window's events plus
:class:`History`: the same students' events of the :data:`LOOKBACK` before
the window, and aggregates of everything older.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES, EXAM_EVENT_TYPES, EventType

#: How far back ``student_events_7d`` counts, and how much detail history the features read.
LOOKBACK = pd.Timedelta(days=7)

#: Columns of the window's events (typed) that :func:`event_features` and :func:`daily_activity` read.
EVENT_INPUT_COLUMNS = [
    "event_id",
    "event_key",
    "student_id",
    "student_username",
    "event_type",
    "timestamp",
    "course_id",
    "activity_id",
    "processed_for_ai",
    "percentage",
    "attempt_number",
    "progress_percent",
    "time_spent_seconds",
]
#: Columns of the detail history (events of the LOOKBACK before the window).
HISTORY_COLUMNS = ["event_id", "student_id", "event_type", "activity_id", "timestamp"]
#: What later events' features depend on: a student's events, their types, exams and times.
TIMELINE_COLUMNS = HISTORY_COLUMNS

FEATURE_COLUMNS = [
    "event_id",
    "event_key",
    "student_id",
    "event_type",
    "timestamp",
    "course_id",
    "activity_id",
    "score_pct",
    "passed",
    "attempt_number",
    "prior_failures",
    "time_spent_seconds",
    "progress_pct",
    "seconds_since_prev_event",
    "student_events_7d",
    "hour_of_day",
    "day_of_week",
    "processed_for_ai",
]

RESULT_TYPES = (EventType.EXAM_PASSED, EventType.EXAM_FAILED)
#: Events at which time spent is known: the attempt was submitted, graded, watched or completed.
COMPLETION_TYPES = (
    EventType.EXAM_COMPLETED,
    EventType.EXAM_PASSED,
    EventType.EXAM_FAILED,
    EventType.CONTENT_WATCHED,
    EventType.CONTENT_COMPLETED,
)
PROGRESS_TYPES = (EventType.CONTENT_WATCHED, EventType.CONTENT_COMPLETED)


@dataclass(frozen=True)
class History:
    """What the features need from before the window, for the window's students.

    ``recent``: their events in ``[window start - LOOKBACK, window start)``
    (:data:`HISTORY_COLUMNS`). ``last_event_at``: per ``student_id``, the time
    of their latest event before that (``last_event_at``). ``failures``: per
    ``(student_id, activity_id)``, their ``exam_failed`` events before that
    (``failures``).
    """

    recent: pd.DataFrame
    last_event_at: pd.DataFrame
    failures: pd.DataFrame

    @classmethod
    def empty(cls) -> History:
        return cls(
            recent=pd.DataFrame({c: pd.Series(dtype=object) for c in HISTORY_COLUMNS}),
            last_event_at=pd.DataFrame(
                {"student_id": pd.Series(dtype="Int64"), "last_event_at": pd.Series(dtype="datetime64[us, UTC]")}
            ),
            failures=pd.DataFrame({c: pd.Series(dtype="Int64") for c in ("student_id", "activity_id", "failures")}),
        )


def event_features(events: pd.DataFrame, history: History, timezone: str) -> pd.DataFrame:
    """One row of :data:`FEATURE_COLUMNS` per row of ``events`` (ordered by time, then id).

    ``events`` holds the window's events with :data:`EVENT_INPUT_COLUMNS`;
    ``timezone`` (``LMS_TIMEZONE``) sets ``hour_of_day`` and ``day_of_week``.
    """
    if events.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in FEATURE_COLUMNS})
    out = events.reset_index(drop=True)
    frame = _timeline(out, history.recent)
    target = frame["_row"].to_numpy() >= 0
    rows = frame.loc[target, "_row"].to_numpy()

    def per_event(values: pd.Series) -> pd.Series:
        """Values computed on the timeline, back in the order of ``out``."""
        picked = values[target]
        return pd.Series(picked.to_numpy(), index=rows, dtype=picked.dtype).sort_index()

    event_type = out["event_type"]
    is_exam = event_type.isin(EXAM_EVENT_TYPES)
    result = event_type.isin(RESULT_TYPES)
    local = out["timestamp"].dt.tz_convert(timezone)
    out["score_pct"] = out["percentage"].where(result)
    out["passed"] = event_type.map({EventType.EXAM_PASSED.value: True, EventType.EXAM_FAILED.value: False}).astype(
        "boolean"
    )
    out["attempt_number"] = _whole(out["attempt_number"].where(is_exam))
    out["prior_failures"] = per_event(_prior_failures(frame, history.failures))
    out["time_spent_seconds"] = _whole(out["time_spent_seconds"].where(event_type.isin(COMPLETION_TYPES)))
    out["progress_pct"] = out["progress_percent"].where(event_type.isin(PROGRESS_TYPES))
    out["seconds_since_prev_event"] = (
        out["timestamp"] - per_event(_previous_event_time(frame, history.last_event_at))
    ).dt.total_seconds()
    out["student_events_7d"] = per_event(_events_within(frame, LOOKBACK))
    out["hour_of_day"] = local.dt.hour.astype("int64")
    out["day_of_week"] = local.dt.day_of_week.astype("int64")
    out["processed_for_ai"] = out["processed_for_ai"].astype("boolean")
    ordered = out.sort_values(["timestamp", "event_id"], kind="mergesort")
    return ordered[FEATURE_COLUMNS].reset_index(drop=True)


def _whole(values: pd.Series) -> pd.Series:
    """Numbers as nullable integers (rounded: metadata may hold 2.0)."""
    return pd.to_numeric(values, errors="coerce").round().astype("Int64")


def _timeline(events: pd.DataFrame, recent: pd.DataFrame) -> pd.DataFrame:
    """Window events (``_row`` = their position) and recent history (``_row`` = -1), by student, time, id."""
    parts = [events[HISTORY_COLUMNS].assign(_row=np.arange(len(events)))]
    if len(recent):
        parts.append(recent[HISTORY_COLUMNS].assign(_row=-1))
    frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    frame = frame.sort_values(["student_id", "timestamp", "event_id"], kind="mergesort").reset_index(drop=True)
    frame["_position"] = frame.groupby("student_id", sort=False).cumcount().to_numpy()
    return frame


def _previous_event_time(frame: pd.DataFrame, last_event_at: pd.DataFrame) -> pd.Series:
    """Time of each row's predecessor; the first row of a student falls back to older history."""
    prev = frame.groupby("student_id", sort=False)["timestamp"].shift(1)
    older = (
        frame["student_id"].map(last_event_at.set_index("student_id")["last_event_at"]) if len(last_event_at) else None
    )
    if older is not None:
        prev = prev.fillna(older.astype(prev.dtype))
    return prev


def _events_within(frame: pd.DataFrame, span: pd.Timedelta) -> pd.Series:
    """Per row, the student's earlier rows with ``timestamp >= this timestamp - span``.

    ``merge_asof`` finds, per student, the first row at or after the cut-off;
    the count is the distance in position to it.
    """
    left = pd.DataFrame(
        {"student_id": frame["student_id"], "since": frame["timestamp"] - span, "_row": np.arange(len(frame))}
    ).sort_values("since", kind="mergesort")
    right = (
        frame[["student_id", "timestamp", "_position"]]
        .drop_duplicates(["student_id", "timestamp"], keep="first")
        .sort_values("timestamp", kind="mergesort")
    )
    first = pd.merge_asof(left, right, left_on="since", right_on="timestamp", by="student_id", direction="forward")
    first_position = first.set_index("_row")["_position"].sort_index().to_numpy()
    return pd.Series(frame["_position"].to_numpy() - first_position, index=frame.index, dtype="int64")


def _prior_failures(frame: pd.DataFrame, failures_before: pd.DataFrame) -> pd.Series:
    """Per exam row, the student's earlier ``exam_failed`` rows for the same exam; NA for content."""
    is_exam = frame["event_type"].isin(EXAM_EVENT_TYPES)
    exams = frame.loc[is_exam, ["student_id", "activity_id"]]
    failed = (frame.loc[is_exam, "event_type"] == EventType.EXAM_FAILED).astype("int64")
    earlier = failed.groupby([exams["student_id"], exams["activity_id"]], sort=False).cumsum() - failed
    if len(failures_before):
        older = exams.merge(failures_before, on=["student_id", "activity_id"], how="left")["failures"]
        earlier = earlier + older.fillna(0).astype("int64").to_numpy()
    out = pd.Series(pd.NA, index=frame.index, dtype="Int64")
    out[is_exam] = earlier.astype("int64")
    return out


def students_with_new_timelines(stored: pd.DataFrame, computed: pd.DataFrame) -> set[int]:
    """Students whose events in a window differ between what was stored and what was just computed
    (an event added, removed, moved or retyped): their later events' features are out of date."""
    if stored.empty and computed.empty:
        return set()

    def timeline(frame: pd.DataFrame) -> pd.DataFrame:
        ids = {c: pd.to_numeric(frame[c]).astype("Int64") for c in ("event_id", "student_id", "activity_id")}
        times = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[us, UTC]")
        return frame[TIMELINE_COLUMNS].assign(**ids, timestamp=times)

    merged = timeline(stored).merge(timeline(computed), how="outer", on=TIMELINE_COLUMNS, indicator=True)
    return {int(s) for s in merged.loc[merged["_merge"] != "both", "student_id"].dropna().unique()}


DAILY_COLUMNS = [
    "student_id",
    "day",
    "student_username",
    "events_total",
    *[f"{t}_count" for t in ALL_EVENT_TYPES],
    "exams_passed",
    "exams_failed",
    "mean_score_pct",
    "content_minutes",
    "first_event_at",
    "last_event_at",
]


def daily_activity(events: pd.DataFrame, timezone: str) -> pd.DataFrame:
    """One row of :data:`DAILY_COLUMNS` per ``(student_id, day)``, days in ``timezone``.

    ``events`` holds :data:`EVENT_INPUT_COLUMNS`. ``mean_score_pct`` averages
    graded results; ``content_minutes`` is the time spent on content completed
    that day (counted once per content attempt, on its completion).
    """
    if events.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in DAILY_COLUMNS})
    frame = events.assign(day=events["timestamp"].dt.tz_convert(timezone).dt.date)
    event_type = frame["event_type"]
    frame["_score"] = frame["percentage"].where(event_type.isin(RESULT_TYPES))
    frame["_content_seconds"] = (
        frame["time_spent_seconds"].where(event_type == EventType.CONTENT_COMPLETED).astype("float64")
    )
    frame["_passed_exam"] = frame["activity_id"].where(event_type == EventType.EXAM_PASSED)
    frame["_failed_exam"] = frame["activity_id"].where(event_type == EventType.EXAM_FAILED)
    keys = ["student_id", "day"]
    grouped = frame.sort_values(["timestamp", "event_id"], kind="mergesort").groupby(keys, sort=True)
    daily = grouped.agg(
        student_username=("student_username", "last"),
        events_total=("event_id", "size"),
        exams_passed=("_passed_exam", "nunique"),
        exams_failed=("_failed_exam", "nunique"),
        mean_score_pct=("_score", "mean"),
        content_seconds=("_content_seconds", "sum"),
        first_event_at=("timestamp", "min"),
        last_event_at=("timestamp", "max"),
    )
    counts = pd.crosstab([frame["student_id"], frame["day"]], event_type).reindex(
        columns=list(ALL_EVENT_TYPES), fill_value=0
    )
    counts.columns = [f"{t}_count" for t in counts.columns]
    daily = daily.join(counts).reset_index()
    daily["content_minutes"] = daily.pop("content_seconds") / 60
    return daily[DAILY_COLUMNS]
