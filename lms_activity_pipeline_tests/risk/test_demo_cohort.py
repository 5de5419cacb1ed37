"""The demo LMS's struggling cohort: fails, goes silent, some come back and pass (pure frames, no database)."""

from __future__ import annotations

import datetime as dt

import pytest

from lms_activity_pipeline.lms import demo

pytestmark = pytest.mark.unit

NOW = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)


def test_cohort_fails_goes_silent_and_some_recover() -> None:
    students, days = 400, 30
    frames = demo.build_demo_frames(students=students, days=days, seed=42, now=NOW)
    cat = demo._catalogue(demo._rng(42, 0), students)
    cohort = demo.struggling_cohort(demo._rng(42, 5), cat, int(NOW.timestamp()), days).set_index("student_id")
    assert len(cohort) == 32 and 0 < (cohort["back_from"] >= 0).sum() < len(cohort)

    exams = frames["Attempts"].merge(cohort, left_on="user_id", right_index=True)
    started = (exams["started_at"] - demo.EPOCH) // dt.timedelta(seconds=1)
    never_back = exams["back_from"] < 0
    assert not (never_back & (started >= exams["silent_from"])).any()  # silent for good
    came_back = (exams["back_from"] >= 0) & (started >= exams["back_from"])
    assert not ((started >= exams["silent_from"]) & ~came_back & (exams["back_from"] >= 0)).any()  # the gap
    pass_mark = cat.exam_pass[exams["exam_id"].to_numpy() - 1]
    graded = exams["score"].notna().to_numpy()
    before = (started < exams["silent_from"]).to_numpy()
    assert (exams["score"].to_numpy()[graded & before] < pass_mark[graded & before]).all()
    assert (exams["score"].to_numpy()[graded & came_back.to_numpy()] >= pass_mark[graded & came_back.to_numpy()]).all()

    contents = frames["ContentAttempts"]
    half = contents["user_id"].isin(cohort.index) & (contents["status"] == "in_progress")
    assert half.sum() > 0 and contents.loc[half, "completed_at"].isna().all()


def test_small_demos_have_no_cohort() -> None:
    assert len(demo.build_demo_frames(students=50, days=14, seed=42, now=NOW)["Attempts"]) == 350
