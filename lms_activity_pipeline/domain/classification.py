"""Classification of LMS attempts into activity events (docs/ingestion.md, event types and classification), vectorised.

Input frames are the typed outputs of :mod:`cleaning`; the output is one row
per event with the columns of :data:`EVENT_COLUMNS` (those of
``lms_activity_events`` that the pipeline computes, plus ``time_is_fallback``:
the event time came from ``updated_at`` and is kept from the first sighting).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lms_activity_pipeline.domain.cleaning import REJECT_COLUMNS, empty_rejects
from lms_activity_pipeline.domain.event_types import (
    ALL_EVENT_TYPES,
    CONTENT_KEY_PREFIX,
    EXAM_KEY_PREFIX,
    EventType,
)

EVENT_COLUMNS = [
    "event_key",
    "event_type",
    "student_id",
    "student_username",
    "mentor_id",
    "mentor_username",
    "activity_id",
    "activity_title",
    "course_id",
    "course_title",
    "activity_metadata",
    "timestamp",
    "time_is_fallback",
]
WATCHABLE_CONTENT = ("video", "audio")
WATCHED_PERCENT = 90.0


@dataclass(frozen=True)
class Dimensions:
    """Typed LMS dimension tables needed to describe events."""

    users: pd.DataFrame
    courses: pd.DataFrame
    exams: pd.DataFrame
    contents: pd.DataFrame
    assignments: pd.DataFrame


def empty_events() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in EVENT_COLUMNS})


def attempt_numbers(history: pd.DataFrame) -> pd.Series:
    """1-based attempt number of each attempt among its student's attempts at that exam.

    ``history`` holds ``id, user_id, exam_id, started_at`` of every attempt
    that could precede the ones being classified; ties break by id.
    """
    if history.empty:
        return pd.Series(dtype="Int64")
    ordered = history.sort_values(["user_id", "exam_id", "started_at", "id"])
    numbers = ordered.groupby(["user_id", "exam_id"], sort=False).cumcount() + 1
    return pd.Series(numbers.to_numpy(), index=ordered["id"].to_numpy(), dtype="Int64")


def _reject(frame: pd.DataFrame, mask: pd.Series, source: str, reason: str | pd.Series) -> pd.DataFrame:
    out = pd.DataFrame({"source": source, "id": frame.loc[mask, "id"].astype(object)})
    out["reason"] = reason[mask] if isinstance(reason, pd.Series) else reason
    return out[REJECT_COLUMNS]


def _with_refs(
    frame: pd.DataFrame, source: str, users: pd.DataFrame, activity: pd.DataFrame, activity_col: str, label: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Join the student and the activity; rows whose references are unknown are rejected."""
    students = users.rename(columns={"id": "user_id", "username": "student_username", "full_name": "student_name"})
    merged = frame.merge(students[["user_id", "student_username", "student_name"]], on="user_id", how="left")
    merged = merged.merge(
        activity.rename(columns={"id": activity_col}), on=activity_col, how="left", suffixes=("", "_a")
    )
    no_user = merged["student_username"].isna()
    no_activity = merged["title"].isna() & ~merged[activity_col].isin(activity["id"])
    rejects = pd.concat(
        [
            _reject(merged, no_user, source, "user_id: unknown user " + merged["user_id"].astype("string")),
            _reject(
                merged,
                ~no_user & no_activity,
                source,
                f"{activity_col}: unknown {label} " + merged[activity_col].astype("string"),
            ),
        ],
        ignore_index=True,
    )
    return merged.loc[~(no_user | no_activity)].reset_index(drop=True), rejects


def _metadata_json(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    """One JSON object per row (C-speed ``to_json``), missing values as ``null``."""
    if frame.empty:
        return pd.Series(dtype=object)
    text = frame[columns].to_json(orient="records", lines=True, date_format="iso")
    return pd.Series(text.rstrip("\n").split("\n"), index=frame.index, dtype=object)


def _events(
    base: pd.DataFrame, event_type: str, mask: pd.Series, time: pd.Series, fallback: pd.Series | bool, prefix: str
) -> pd.DataFrame:
    rows = base.loc[mask].copy()
    rows["event_type"] = event_type
    rows["timestamp"] = time[mask]
    rows["time_is_fallback"] = fallback[mask] if isinstance(fallback, pd.Series) else fallback
    rows["event_key"] = prefix + ":" + rows["id"].astype("string") + ":" + event_type
    return rows


def classify_exam_attempts(
    attempts: pd.DataFrame, dims: Dimensions, numbers: pd.Series | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Exam attempts -> exam_started / exam_completed / exam_passed / exam_failed events."""
    if attempts.empty:
        return empty_events(), empty_rejects()
    exams = dims.exams[["id", "course_id", "title", "max_score", "pass_score"]]
    base, rejects = _with_refs(attempts, "Attempts", dims.users, exams, "exam_id", "exam")
    over_max = base["score"].notna() & base["max_score"].notna() & (base["score"] > base["max_score"])
    rejects = pd.concat(
        [
            rejects,
            _reject(base, over_max, "Attempts", "score: above the exam's max_score " + base["score"].astype("string")),
        ],
        ignore_index=True,
    )
    base = base.loc[~over_max].reset_index(drop=True)

    numbers = attempt_numbers(base[["id", "user_id", "exam_id", "started_at"]]) if numbers is None else numbers
    base["attempt_number"] = base["id"].map(numbers).astype("Int64")
    base["percentage"] = (base["score"] / base["max_score"].where(base["max_score"] > 0) * 100).round(1)
    base["time_spent_seconds"] = (base["submitted_at"] - base["started_at"]).dt.total_seconds().round().astype("Int64")
    meta = [
        "student_name",
        "status",
        "score",
        "max_score",
        "pass_score",
        "percentage",
        "attempt_number",
        "time_spent_seconds",
    ]
    base["activity_metadata"] = _metadata_json(base, meta)
    base = base.rename(columns={"user_id": "student_id", "exam_id": "activity_id", "title": "activity_title"})

    graded = (base["status"] == "graded") & base["score"].notna() & base["pass_score"].notna()
    result_time = base["graded_at"].fillna(base["submitted_at"])
    result_fallback = result_time.isna()
    result_time = result_time.fillna(base["updated_at"])
    passed = graded & (base["score"] >= base["pass_score"])
    frames = [
        _events(base, EventType.EXAM_STARTED, base["started_at"].notna(), base["started_at"], False, EXAM_KEY_PREFIX),
        _events(
            base, EventType.EXAM_COMPLETED, base["submitted_at"].notna(), base["submitted_at"], False, EXAM_KEY_PREFIX
        ),
        _events(base, EventType.EXAM_PASSED, passed, result_time, result_fallback, EXAM_KEY_PREFIX),
        _events(base, EventType.EXAM_FAILED, graded & ~passed, result_time, result_fallback, EXAM_KEY_PREFIX),
    ]
    return _finish(frames, dims), rejects


def classify_content_attempts(attempts: pd.DataFrame, dims: Dimensions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Content attempts -> content_started / content_watched / content_completed events."""
    if attempts.empty:
        return empty_events(), empty_rejects()
    contents = dims.contents[["id", "course_id", "title", "content_type", "duration_seconds"]]
    base, rejects = _with_refs(attempts, "ContentAttempts", dims.users, contents, "content_id", "content")
    meta = ["student_name", "status", "content_type", "progress_percent", "time_spent_seconds", "duration_seconds"]
    base["activity_metadata"] = _metadata_json(base, meta)
    base = base.rename(columns={"user_id": "student_id", "content_id": "activity_id", "title": "activity_title"})

    done_time = base["completed_at"].fillna(base["updated_at"])
    done_fallback = base["completed_at"].isna()
    watched = base["content_type"].isin(WATCHABLE_CONTENT) & (base["progress_percent"] >= WATCHED_PERCENT)
    completed = (base["status"] == "completed") | base["completed_at"].notna()
    frames = [
        _events(
            base, EventType.CONTENT_STARTED, base["started_at"].notna(), base["started_at"], False, CONTENT_KEY_PREFIX
        ),
        _events(base, EventType.CONTENT_WATCHED, watched, done_time, done_fallback, CONTENT_KEY_PREFIX),
        _events(base, EventType.CONTENT_COMPLETED, completed, done_time, done_fallback, CONTENT_KEY_PREFIX),
    ]
    return _finish(frames, dims), rejects


def _finish(frames: list[pd.DataFrame], dims: Dimensions) -> pd.DataFrame:
    events = pd.concat(frames, ignore_index=True)
    courses = dims.courses.rename(columns={"id": "course_id", "title": "course_title"})[["course_id", "course_title"]]
    events = events.merge(courses, on="course_id", how="left")
    events = assign_mentors(events, dims.assignments, dims.users)
    return events[EVENT_COLUMNS]


def assign_mentors(events: pd.DataFrame, assignments: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """Attach the student's mentor active at the event time (lowest assignment id wins)."""
    if events.empty or assignments.empty:
        return events.assign(
            mentor_id=pd.array([pd.NA] * len(events), dtype="Int64"),
            mentor_username=pd.Series(pd.NA, index=events.index, dtype=object),
        )
    pairs = events[["event_key", "student_id", "timestamp"]].merge(
        assignments[["id", "student_id", "mentor_id", "assigned_at", "ended_at"]], on="student_id"
    )
    active = (pairs["assigned_at"] <= pairs["timestamp"]) & (
        pairs["ended_at"].isna() | (pairs["ended_at"] > pairs["timestamp"])
    )
    first = pairs.loc[active].sort_values("id").drop_duplicates("event_key")[["event_key", "mentor_id"]]
    mentors = users.rename(columns={"id": "mentor_id", "username": "mentor_username"})[["mentor_id", "mentor_username"]]
    first = first.merge(mentors, on="mentor_id", how="left")
    return events.merge(first, on="event_key", how="left")


def in_window(events: pd.DataFrame, start: dt.datetime | None, end: dt.datetime | None) -> pd.DataFrame:
    """Events whose time falls in ``[start, end)`` (an open side when ``None``)."""
    ts = events["timestamp"]
    keep = pd.Series(True, index=events.index)
    if start is not None:
        keep &= ts >= start
    if end is not None:
        keep &= ts < end
    return events.loc[keep].reset_index(drop=True)


def of_types(events: pd.DataFrame, event_types: Iterable[str] = ALL_EVENT_TYPES) -> pd.DataFrame:
    """Only the monitored event types."""
    return events.loc[events["event_type"].isin(list(event_types))].reset_index(drop=True)


def counts_by_type(events: pd.DataFrame) -> dict[str, int]:
    """Events per type, every type present (zeros included), in canonical order."""
    counts = events["event_type"].value_counts() if not events.empty else pd.Series(dtype=np.int64)
    return {t: int(counts.get(t, 0)) for t in ALL_EVENT_TYPES}
