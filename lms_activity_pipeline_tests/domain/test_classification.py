"""Classification rules (docs/ingestion.md) on typed frames (pure domain logic, no database)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lms_activity_pipeline.domain import classification as cls
from lms_activity_pipeline.domain import cleaning
from lms_activity_pipeline_tests.support.lms_builder import t

pytestmark = pytest.mark.unit


def frame(rows: list[dict], spec: tuple[cleaning.Column, ...]) -> pd.DataFrame:
    raw = pd.DataFrame(rows, columns=[c.name for c in spec]).astype(object)
    typed, _rejected = cleaning._typed(raw, spec)
    return typed


def dims(pass_score: float | None = 35, assignments: list[dict] | None = None) -> cls.Dimensions:
    return cls.Dimensions(
        users=frame(
            [
                {"id": 1, "username": "alice", "full_name": "Alice L", "role": "student"},
                {"id": 2, "username": "bob", "full_name": "Bob S", "role": "student"},
                {"id": 10, "username": "m10", "role": "mentor"},
                {"id": 11, "username": "m11", "role": "mentor"},
            ],
            cleaning.USER_COLUMNS,
        ),
        courses=frame([{"id": 100, "title": "Algebra"}], cleaning.COURSE_COLUMNS),
        exams=frame(
            [
                {"id": 200, "course_id": 100, "title": "Quiz", "max_score": 50, "pass_score": pass_score},
                {"id": 201, "course_id": 100, "title": "Final", "max_score": 100, "pass_score": 60},
            ],
            cleaning.EXAM_COLUMNS,
        ),
        contents=frame(
            [
                {"id": 300, "course_id": 100, "title": "Video", "content_type": "video", "duration_seconds": 600},
                {"id": 301, "course_id": 100, "title": "Notes", "content_type": "article"},
                {"id": 302, "course_id": 100, "title": "Talk", "content_type": "audio", "duration_seconds": None},
            ],
            cleaning.CONTENT_COLUMNS,
        ),
        assignments=frame(
            assignments
            if assignments is not None
            else [{"id": 1, "student_id": 1, "mentor_id": 10, "assigned_at": t(1, 0)}],
            cleaning.ASSIGNMENT_COLUMNS,
        ),
    )


def exam_events(rows: list[dict], **kw) -> pd.DataFrame:
    for row in rows:
        row.setdefault("user_id", 1)
        row.setdefault("exam_id", 200)
        row.setdefault("updated_at", max(v for k, v in row.items() if k.endswith("_at") and v is not None))
    events, rejected = cls.classify_exam_attempts(frame(rows, cleaning.EXAM_ATTEMPT_COLUMNS), dims(**kw))
    assert rejected.empty, rejected
    return events


def content_events(rows: list[dict]) -> pd.DataFrame:
    for row in rows:
        row.setdefault("user_id", 1)
        row.setdefault("time_spent_seconds", 60)
        row.setdefault("updated_at", max(v for k, v in row.items() if k.endswith("_at") and v is not None))
    events, rejected = cls.classify_content_attempts(frame(rows, cleaning.CONTENT_ATTEMPT_COLUMNS), dims())
    assert rejected.empty, rejected
    return events


def types(events: pd.DataFrame) -> dict[str, pd.Timestamp]:
    return dict(zip(events["event_type"], events["timestamp"], strict=True))


def test_graded_pass_emits_started_completed_passed_with_their_times() -> None:
    events = exam_events(
        [
            {
                "id": 1,
                "status": "graded",
                "started_at": t(3, 10),
                "submitted_at": t(3, 10, 30),
                "graded_at": t(3, 11),
                "score": 42,
            }
        ]
    )
    assert types(events) == {"exam_started": t(3, 10), "exam_completed": t(3, 10, 30), "exam_passed": t(3, 11)}
    assert set(events["event_key"]) == {"exam:1:exam_started", "exam:1:exam_completed", "exam:1:exam_passed"}
    meta = json.loads(events["activity_metadata"].iloc[0])
    assert meta == {
        "student_name": "Alice L",
        "status": "graded",
        "score": 42.0,
        "max_score": 50.0,
        "pass_score": 35.0,
        "percentage": 84.0,
        "attempt_number": 1,
        "time_spent_seconds": 1800,
    }
    assert set(events["course_title"]) == {"Algebra"} and set(events["activity_title"]) == {"Quiz"}


def test_score_exactly_at_pass_mark_passes_and_below_fails() -> None:
    events = exam_events(
        [
            {
                "id": 1,
                "status": "graded",
                "started_at": t(3, 10),
                "submitted_at": t(3, 11),
                "graded_at": t(3, 12),
                "score": 35,
            },
            {
                "id": 2,
                "status": "graded",
                "started_at": t(3, 10),
                "submitted_at": t(3, 11),
                "graded_at": t(3, 12),
                "score": 34.99,
            },
        ]
    )
    results = events[events["event_type"].isin(["exam_passed", "exam_failed"])].set_index("event_key")["event_type"]
    assert results.to_dict() == {"exam:1:exam_passed": "exam_passed", "exam:2:exam_failed": "exam_failed"}


def test_graded_without_graded_at_uses_submitted_at() -> None:
    events = exam_events([{"id": 1, "status": "graded", "started_at": t(3, 10), "submitted_at": t(3, 11), "score": 10}])
    assert types(events)["exam_failed"] == t(3, 11)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"status": "submitted", "submitted_at": t(3, 11)}, {"exam_started", "exam_completed"}),
        ({"status": "graded", "submitted_at": t(3, 11)}, {"exam_started", "exam_completed"}),  # graded, no score
        ({"status": "abandoned"}, {"exam_started"}),
        ({"status": "in_progress"}, {"exam_started"}),
    ],
    ids=["ungraded", "graded-without-score", "abandoned", "in-progress"],
)
def test_attempts_without_a_result_have_no_pass_or_fail(row: dict, expected: set[str]) -> None:
    events = exam_events([{"id": 1, "started_at": t(3, 10), **row}])
    assert set(events["event_type"]) == expected


def test_missing_pass_mark_yields_no_pass_or_fail() -> None:
    events = exam_events(
        [
            {
                "id": 1,
                "status": "graded",
                "started_at": t(3, 10),
                "submitted_at": t(3, 11),
                "graded_at": t(3, 12),
                "score": 40,
            }
        ],
        pass_score=None,
    )
    assert set(events["event_type"]) == {"exam_started", "exam_completed"}


def test_attempt_spanning_midnight_has_events_on_both_days() -> None:
    events = exam_events(
        [
            {
                "id": 1,
                "status": "graded",
                "started_at": t(3, 23, 50),
                "submitted_at": t(4, 0, 20),
                "graded_at": t(4, 9),
                "score": 20,
            }
        ]
    )
    day3 = cls.in_window(events, t(3, 0), t(4, 0))
    day4 = cls.in_window(events, t(4, 0), t(5, 0))
    assert set(day3["event_type"]) == {"exam_started"}
    assert set(day4["event_type"]) == {"exam_completed", "exam_failed"}


def test_attempt_numbers_count_retakes_per_student_and_exam() -> None:
    events = exam_events(
        [
            {"id": 7, "status": "graded", "started_at": t(3, 10), "submitted_at": t(3, 11), "score": 10},
            {"id": 8, "status": "graded", "started_at": t(4, 10), "submitted_at": t(4, 11), "score": 45},
            {"id": 9, "exam_id": 201, "status": "abandoned", "started_at": t(4, 12)},
        ]
    )
    numbers = {
        key: json.loads(meta)["attempt_number"]
        for key, meta in zip(events["event_key"], events["activity_metadata"], strict=True)
        if key.endswith("exam_started")
    }
    assert numbers == {"exam:7:exam_started": 1, "exam:8:exam_started": 2, "exam:9:exam_started": 1}


@pytest.mark.parametrize(
    ("content_id", "progress", "watched"),
    [(300, 89.9, False), (300, 90, True), (302, 95, True), (301, 100, False)],
    ids=["video-89.9", "video-90", "audio-no-duration", "article"],
)
def test_content_watched_needs_video_or_audio_at_90_percent(content_id: int, progress: float, watched: bool) -> None:
    events = content_events(
        [
            {
                "id": 1,
                "content_id": content_id,
                "status": "in_progress",
                "progress_percent": progress,
                "started_at": t(3, 9),
                "updated_at": t(3, 9, 40),
            }
        ]
    )
    assert ("content_watched" in set(events["event_type"])) is watched
    if watched:
        assert types(events)["content_watched"] == t(3, 9, 40)  # no completed_at: first seen at updated_at
        assert events.set_index("event_type").loc["content_watched", "time_is_fallback"]


def test_content_completed_by_status_or_completed_at() -> None:
    events = content_events(
        [
            {
                "id": 1,
                "content_id": 301,
                "status": "completed",
                "progress_percent": 100,
                "started_at": t(3, 9),
                "updated_at": t(3, 10),
            },
            {
                "id": 2,
                "content_id": 301,
                "status": "in_progress",
                "progress_percent": 50,
                "started_at": t(3, 9),
                "completed_at": t(3, 9, 30),
            },
            {"id": 3, "content_id": 301, "status": "in_progress", "progress_percent": 50, "started_at": t(3, 9)},
        ]
    )
    done = events[events["event_type"] == "content_completed"].set_index("event_key")["timestamp"].to_dict()
    assert done == {"content:1:content_completed": t(3, 10), "content:2:content_completed": t(3, 9, 30)}
    meta = json.loads(events[events["event_key"] == "content:1:content_started"]["activity_metadata"].iloc[0])
    assert meta["content_type"] == "article" and meta["duration_seconds"] is None


def test_mentor_is_the_active_assignment_at_event_time_first_by_id() -> None:
    assignments = [
        {"id": 5, "student_id": 1, "mentor_id": 11, "assigned_at": t(1, 0), "ended_at": t(3, 12)},
        {"id": 6, "student_id": 1, "mentor_id": 10, "assigned_at": t(3, 12)},
        {"id": 7, "student_id": 1, "mentor_id": 11, "assigned_at": t(4, 0)},
    ]
    rows = [
        {"id": 1, "status": "in_progress", "started_at": t(3, 10)},
        {"id": 2, "status": "in_progress", "started_at": t(3, 13)},
        {"id": 3, "status": "in_progress", "started_at": t(5, 10)},
        {"id": 4, "user_id": 2, "status": "in_progress", "started_at": t(5, 10)},
    ]
    for row in rows:
        row.update(exam_id=200, updated_at=row["started_at"], user_id=row.get("user_id", 1))
    events, _ = cls.classify_exam_attempts(frame(rows, cleaning.EXAM_ATTEMPT_COLUMNS), dims(assignments=assignments))
    mentors = events.set_index("event_key")["mentor_username"].to_dict()
    assert mentors["exam:1:exam_started"] == "m11"  # before the first assignment ended
    assert mentors["exam:2:exam_started"] == "m10"
    assert mentors["exam:3:exam_started"] == "m10"  # two active: assignment 6 < 7
    assert pd.isna(mentors["exam:4:exam_started"])  # bob has no mentor


def test_unknown_references_are_rejected_not_fatal() -> None:
    rows = [
        {
            "id": 1,
            "user_id": 1,
            "exam_id": 999,
            "status": "in_progress",
            "started_at": t(3, 10),
            "updated_at": t(3, 10),
        },
        {
            "id": 2,
            "user_id": 77,
            "exam_id": 200,
            "status": "in_progress",
            "started_at": t(3, 10),
            "updated_at": t(3, 10),
        },
        {
            "id": 3,
            "user_id": 1,
            "exam_id": 200,
            "status": "graded",
            "started_at": t(3, 10),
            "submitted_at": t(3, 11),
            "score": 51,
            "updated_at": t(3, 11),
        },
        {
            "id": 4,
            "user_id": 1,
            "exam_id": 200,
            "status": "in_progress",
            "started_at": t(3, 10),
            "updated_at": t(3, 10),
        },
    ]
    events, rejected = cls.classify_exam_attempts(frame(rows, cleaning.EXAM_ATTEMPT_COLUMNS), dims())
    assert set(events["event_key"]) == {"exam:4:exam_started"}
    reasons = dict(zip(rejected["id"], rejected["reason"], strict=True))
    assert reasons == {
        1: "exam_id: unknown exam 999",
        2: "user_id: unknown user 77",
        3: "score: above the exam's max_score 51.0",
    }


def test_cleaning_rejects_bad_values_with_reasons_and_keeps_the_rest() -> None:
    raw = pd.DataFrame(
        [
            {
                "id": "1",
                "user_id": None,
                "exam_id": "200",
                "status": "in_progress",
                "started_at": "2024-05-03 10:00:00",
                "updated_at": "2024-05-03 10:00:00",
            },
            {
                "id": "2",
                "user_id": "1",
                "exam_id": "200",
                "status": "graded",
                "started_at": "2024-05-03 10:00:00",
                "submitted_at": "2024-05-03T11:00:00+02:00",
                "score": "-3",
                "updated_at": "2024-05-03 10:00:00",
            },
            {
                "id": "3",
                "user_id": "1",
                "exam_id": "200",
                "status": "graded",
                "started_at": "2024-05-03 10:00:00",
                "score": "forty",
                "updated_at": "2024-05-03 10:00:00",
            },
            {
                "id": "4",
                "user_id": "1",
                "exam_id": "200",
                "status": "weird",
                "started_at": "2024-05-03 10:00:00",
                "updated_at": "2024-05-03 10:00:00",
            },
            {
                "id": "5",
                "user_id": "1",
                "exam_id": "200",
                "status": "submitted",
                "started_at": "not a date",
                "updated_at": "2024-05-03 10:00:00",
            },
            {
                "id": "6",
                "user_id": "1",
                "exam_id": "200",
                "status": "graded",
                "started_at": "2024-05-03T10:00:00+02:00",
                "submitted_at": "2024-05-03 09:00:00",
                "score": "40",
                "updated_at": "2024-05-03 10:00:00",
            },
        ]
    )
    clean, rejected = cleaning.clean_exam_attempts(raw)
    assert clean["id"].tolist() == [6]
    assert clean["started_at"].iloc[0] == t(3, 8)  # +02:00 converted to UTC
    assert clean["score"].iloc[0] == 40.0
    reasons = dict(zip(rejected["id"], rejected["reason"], strict=True))
    assert reasons == {
        1: "user_id: invalid or missing value NULL",
        2: "score: negative value -3.0",
        3: "score: invalid or missing value forty",
        4: "status: unknown value weird",
        5: "started_at: invalid or missing value not a date",
    }


def test_cleaning_keeps_the_newest_of_rows_sharing_an_id() -> None:
    """A source profile may point at a view without a primary key: one row per id survives, the newest."""
    row = {"user_id": "1", "exam_id": "200", "status": "in_progress", "started_at": "2024-05-03 10:00:00"}
    raw = pd.DataFrame(
        [
            {"id": "7", **row, "updated_at": "2024-05-03 10:00:00"},
            {
                "id": "7",
                **row,
                "updated_at": "2024-05-03 11:00:00",
                "status": "submitted",
                "submitted_at": "2024-05-03 11:00:00",
            },
            {"id": "8", **row, "updated_at": "2024-05-03 10:00:00"},
            {
                "id": "8",
                **row,
                "updated_at": "2024-05-03 12:00:00",
                "status": "bogus",
            },  # newer but bad: the good one stays
        ]
    )
    clean, rejected = cleaning.clean_exam_attempts(raw)
    assert sorted(zip(clean["id"], clean["status"], strict=False)) == [(7, "submitted"), (8, "in_progress")]
    assert sorted(rejected["reason"]) == [
        "id: duplicate of another row with this id and a later updated_at",
        "status: unknown value bogus",
    ]


def test_integers_beyond_bigint_are_rejected_not_fatal() -> None:
    row = {
        "exam_id": "200",
        "status": "in_progress",
        "started_at": "2024-05-03 10:00:00",
        "updated_at": "2024-05-03 10:00:00",
    }
    raw = pd.DataFrame(
        [
            {"id": 1, "user_id": 1e20, **row},
            {"id": 2**63, "user_id": 1, **row},
            {"id": 3, "user_id": 2.5, **row},
            {"id": 4, "user_id": 4611686018427387905, **row},
        ],
        dtype=object,  # as a SQLite column holding mixed types reads
    )
    clean, rejected = cleaning.clean_exam_attempts(raw)
    assert clean["user_id"].tolist() == [4611686018427387905]  # exact, not rounded through a float
    assert len(rejected) == 3


def test_unreadable_optional_dimension_values_are_reported_and_the_row_kept() -> None:
    raw = pd.DataFrame(
        [
            {"id": "200", "course_id": "100", "title": "Quiz", "max_score": "50", "pass_score": "n/a"},
            {"id": "201", "course_id": "100", "title": "Final", "max_score": "100", "pass_score": "60"},
            {"id": "x", "course_id": "100", "title": "Broken", "max_score": "zero", "pass_score": "1"},
        ],
        dtype=object,
    )
    clean, rejected = cleaning.clean_dimension("Exams", raw, cleaning.EXAM_COLUMNS)
    assert clean["id"].tolist() == [200, 201] and pd.isna(clean.loc[0, "pass_score"])
    assert sorted(rejected["reason"]) == [
        "id: invalid or missing value x",
        "pass_score: invalid value n/a ignored (row kept)",
    ]
