"""Risk rules in pure pandas: each reason code, the level rule, the score, streaks and point-in-time cut-off."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from lms_activity_pipeline.domain import risk
from lms_activity_pipeline.domain import risk_digest as rd
from lms_activity_pipeline.domain.risk import RISK_EVENT_COLUMNS, RiskThresholds, assess_risk

pytestmark = pytest.mark.unit

AS_OF = dt.date(2025, 3, 20)
CUTOFF = dt.datetime(2025, 3, 21, tzinfo=dt.UTC)
EXAM, EXAM2, VIDEO, ARTICLE = 100, 101, 200, 201


def events(rows: list[tuple]) -> pd.DataFrame:
    """Events from ``(student, course, activity, type, 'YYYY-MM-DD HH:MM', percentage)``."""
    records = []
    for i, (student, course, activity, kind, when, pct) in enumerate(rows, start=1):
        content_type = "video" if activity == VIDEO else "article" if activity == ARTICLE else None
        records.append(
            {
                "event_id": i,
                "student_id": student,
                "student_username": f"s{student}",
                "mentor_id": 9,
                "course_id": course,
                "course_title": f"Course {course}",
                "activity_id": activity,
                "activity_title": f"Activity {activity}",
                "event_type": kind,
                "timestamp": pd.Timestamp(when, tz="UTC"),
                "percentage": pct,
                "content_type": content_type,
            }
        )
    return pd.DataFrame(records, columns=RISK_EVENT_COLUMNS)


def passed_of(rows: list[tuple[int, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["student_id", "activity_id"], dtype="int64")


def assess(rows: list[tuple], passed: list[tuple[int, int]] = (), **kw):
    return assess_risk(events(rows), passed_of(list(passed)), AS_OF, CUTOFF, "UTC", **kw)


def by_student(frame: pd.DataFrame) -> dict[int, dict]:
    return {int(r["student_id"]): r for r in frame.to_dict("records")}


def codes(row: dict) -> list[str]:
    return [r["code"] for r in row["reasons"]]


def test_inactive_with_an_unpassed_exam_is_high_and_silent_after_passing_is_not() -> None:
    rows = [
        (1, 1, EXAM, "exam_started", "2025-03-10 10:00", None),  # 10.6 days silent, exam not passed
        (2, 1, EXAM, "exam_passed", "2025-03-10 10:00", 90.0),  # silent but passed everything
        (3, 1, ARTICLE, "content_started", "2025-03-19 10:00", None),  # active
    ]
    out = by_student(assess(rows, passed=[(2, EXAM)]))
    assert out[1]["risk_level"] == "high" and codes(out[1]) == ["inactive"]
    reason = out[1]["reasons"][0]
    assert reason["threshold"] == 7 and reason["value"] == pytest.approx(10.58, abs=0.01)
    assert "no activity in the course for 10 days" in reason["detail"]
    assert out[1]["risk_score"] == pytest.approx(0.6)
    assert out[2]["risk_level"] == "low" and out[2]["reasons"] == [] and out[2]["risk_score"] == 0
    assert out[3]["risk_level"] == "low"


def test_inactive_threshold_is_configurable() -> None:
    rows = [(1, 1, EXAM, "exam_started", "2025-03-10 10:00", None)]
    out = by_student(assess(rows, thresholds=RiskThresholds(inactive_days=14)))
    assert out[1]["risk_level"] == "low"


def test_two_failures_in_a_row_plus_unpassed_is_high_one_failure_is_medium() -> None:
    rows = [
        (1, 1, EXAM, "exam_failed", "2025-03-18 10:00", 40.0),
        (1, 1, EXAM, "exam_failed", "2025-03-19 10:00", 45.0),
        (2, 1, EXAM, "exam_failed", "2025-03-19 10:00", 40.0),
        # failed twice, then passed: the run is over, nothing unpassed
        (3, 1, EXAM, "exam_failed", "2025-03-17 10:00", 40.0),
        (3, 1, EXAM, "exam_failed", "2025-03-18 10:00", 45.0),
        (3, 1, EXAM, "exam_passed", "2025-03-19 10:00", 80.0),
    ]
    out = by_student(assess(rows, passed=[(3, EXAM)]))
    assert out[1]["risk_level"] == "high" and codes(out[1]) == ["failed_in_row", "unpassed_exam"]
    assert out[1]["reasons"][0]["detail"] == "failed Activity 100 2 times in a row"
    assert out[1]["failed_in_row"] == 2 and out[1]["unpassed_exams"] == 1
    assert out[1]["risk_score"] == pytest.approx(1 - 0.6 * 0.75)
    assert out[2]["risk_level"] == "medium" and codes(out[2]) == ["unpassed_exam"]
    assert out[3]["risk_level"] == "low" and out[3]["failed_in_row"] == 0


def test_stalled_video_after_seven_days_not_articles_nor_watched_videos() -> None:
    rows = [
        (1, 1, VIDEO, "content_started", "2025-03-12 10:00", None),
        (1, 1, EXAM, "exam_passed", "2025-03-20 10:00", 90.0),
        (2, 1, VIDEO, "content_started", "2025-03-12 10:00", None),
        (2, 1, VIDEO, "content_watched", "2025-03-13 10:00", None),
        (3, 1, ARTICLE, "content_started", "2025-03-01 10:00", None),
        (3, 1, EXAM, "exam_passed", "2025-03-20 10:00", 90.0),
        (4, 1, VIDEO, "content_started", "2025-03-16 10:00", None),  # only 5 days ago
    ]
    out = by_student(assess(rows, passed=[(1, EXAM), (3, EXAM)]))
    assert codes(out[1]) == ["stalled_content"] and out[1]["risk_level"] == "medium"
    assert "started Activity 200 over 7 days ago" in out[1]["reasons"][0]["detail"]
    assert out[2]["stalled_contents"] == 0
    assert out[3]["risk_level"] == "low"
    assert out[4]["stalled_contents"] == 0


def test_declining_scores_need_three_strictly_falling_results() -> None:
    rows = [
        (1, 1, EXAM, "exam_passed", "2025-03-15 10:00", 95.0),
        (1, 1, EXAM2, "exam_passed", "2025-03-16 10:00", 80.0),
        (1, 1, EXAM2, "exam_passed", "2025-03-17 10:00", 70.0),
        (2, 1, EXAM, "exam_passed", "2025-03-15 10:00", 95.0),
        (2, 1, EXAM2, "exam_passed", "2025-03-16 10:00", 70.0),
        (2, 1, EXAM2, "exam_passed", "2025-03-17 10:00", 80.0),
    ]
    passed = [(1, EXAM), (1, EXAM2), (2, EXAM), (2, EXAM2)]
    out = by_student(assess(rows, passed=passed))
    assert codes(out[1]) == ["declining_scores"]
    assert out[1]["reasons"][0]["detail"] == "the last 3 exam scores fell: 95% → 80% → 70%"
    assert out[2]["declining_scores"] is False or not out[2]["declining_scores"]


def test_inactive_needs_an_exam_the_student_took_and_has_not_passed() -> None:
    rows = [
        (1, 1, EXAM, "exam_passed", "2025-03-01 10:00", 90.0),  # took one exam, passed it, went silent
        (2, 1, ARTICLE, "content_completed", "2025-03-01 10:00", None),  # took no exam
        (3, 1, EXAM, "exam_passed", "2025-03-01 10:00", 90.0),
        (3, 1, EXAM2, "exam_started", "2025-03-02 10:00", None),  # a second exam, open
    ]
    out = by_student(assess(rows, passed=[(1, EXAM), (3, EXAM)]))
    assert out[1]["risk_level"] == "low" and out[2]["risk_level"] == "low"
    assert codes(out[3]) == ["inactive"]


def test_one_row_per_student_and_course() -> None:
    rows = [
        (1, 1, EXAM, "exam_started", "2025-03-19 10:00", None),
        (1, 2, 300, "exam_failed", "2025-03-19 11:00", 20.0),
    ]
    out = assess(rows)
    assert list(zip(out["student_id"], out["course_id"], strict=True)) == [(1, 1), (1, 2)]
    assert list(out["risk_level"]) == ["low", "medium"]
    assert set(out["model"]) == {risk.RULES_MODEL} and set(out["as_of"]) == {AS_OF}


def test_streak_and_on_track() -> None:
    rows = [
        (1, 1, ARTICLE, "content_started", "2025-03-18 10:00", None),
        (1, 1, ARTICLE, "content_started", "2025-03-19 10:00", None),
        (1, 1, ARTICLE, "content_completed", "2025-03-20 10:00", None),
        (2, 1, ARTICLE, "content_started", "2025-03-17 10:00", None),  # gap on the 18th
        (2, 1, ARTICLE, "content_started", "2025-03-19 10:00", None),
        (2, 1, ARTICLE, "content_started", "2025-03-20 10:00", None),
    ]
    out = by_student(assess(rows))
    assert out[1]["streak_days"] == 3 and out[1]["on_track"]
    assert out[2]["streak_days"] == 2 and not out[2]["on_track"]


def test_point_in_time_events_after_the_cutoff_change_nothing() -> None:
    rows = [
        (1, 1, EXAM, "exam_failed", "2025-03-18 10:00", 40.0),
        (1, 1, EXAM, "exam_failed", "2025-03-19 10:00", 45.0),
        (2, 1, EXAM, "exam_started", "2025-03-05 10:00", None),
    ]
    later = [
        *rows,
        (1, 1, EXAM, "exam_passed", "2025-03-22 10:00", 90.0),
        (2, 1, EXAM, "exam_passed", "2025-03-25 09:00", 90.0),
    ]
    before = assess(rows)
    after = assess(later)  # passed frame as known at the cutoff: the caller reads it with the same cut-off
    pd.testing.assert_frame_equal(before, after)


def test_pairs_silent_longer_than_the_horizon_drop_out() -> None:
    rows = [(1, 1, EXAM, "exam_started", "2025-01-01 10:00", None)]
    assert assess(rows).empty
    assert len(assess(rows, thresholds=RiskThresholds(horizon_days=90))) == 1


def test_bad_thresholds_and_levels_are_refused() -> None:
    with pytest.raises(ValueError, match="inactive_days"):
        RiskThresholds(inactive_days=0)
    with pytest.raises(ValueError, match="unknown risk level 'urgent'"):
        risk.at_or_above(pd.Series(["high"]), "urgent")
    assert list(risk.at_or_above(pd.Series(["high", "medium", "low"]), "medium")) == [True, True, False]


def test_no_events_gives_an_empty_frame_with_the_columns() -> None:
    out = assess([])
    assert out.empty and list(out.columns) == risk.RISK_COLUMNS


# --- the at-risk digest (pure) ---------------------------------------------------------------------


def test_digest_due_per_frequency() -> None:
    now = dt.datetime(2025, 3, 20, 12, tzinfo=dt.UTC)
    assert rd.is_due("weekly", None, now, "UTC")
    assert not rd.is_due("weekly", now - dt.timedelta(days=6), now, "UTC")
    assert rd.is_due("weekly", now - dt.timedelta(days=7), now, "UTC")
    assert not rd.is_due("daily", now - dt.timedelta(hours=11), now, "UTC")
    assert rd.is_due("daily", now - dt.timedelta(hours=13), now, "UTC")
    assert rd.is_due("daily", now - dt.timedelta(hours=11), now, "Pacific/Kiritimati")  # a new day there
    assert rd.is_due("immediate", now, now, "UTC")
    with pytest.raises(ValueError, match="unknown digest frequency 'hourly'"):
        rd.is_due("hourly", None, now, "UTC")


def test_plan_marks_new_and_resolved_and_leaves_pairs_not_due() -> None:
    cols = ["mentor_id", "student_id", "course_id", "risk_level"]
    flagged = pd.DataFrame([(10, 1, 5, "high"), (10, 2, 5, "medium"), (11, 3, 5, "high")], columns=cols)
    previous = pd.DataFrame([(10, 1, 5), (10, 4, 5), (11, 3, 5)], columns=cols[:3])
    plan = rd.plan_enqueue(flagged, previous, lambda mentor, course: mentor == 10, AS_OF)
    assert list(plan.itertuples(index=False, name=None)) == [
        (10, 1, 5, AS_OF, "high", False),
        (10, 2, 5, AS_OF, "medium", True),
        (10, 4, 5, AS_OF, "resolved", False),
    ]


def test_digest_text_escapes_names_and_stays_under_the_limit() -> None:
    reasons = [{"code": "inactive", "detail": "no activity in the course for 9 days, with an exam not passed yet"}]
    students = [rd.DigestStudent(i, f"@**all** student {i}", "high", reasons, new=i == 0) for i in range(400)]
    digest = rd.Digest("Algebra [I](http://x)", AS_OF, students, on_track=[("dave", 4)])
    text = rd.render_digest(digest, limit=3000)
    assert len(text) <= 3000 and "@**all**" not in text and "](http" not in text
    assert "(new)" in text.splitlines()[2] and "more (see `lms-activity risk`)" in text
    assert "🌟 Good news: 1 student on track, active day after day: dave (4 days)" in text
    assert text.endswith("React 👍 if so, 👎 if someone here is wrongly flagged.")


def test_exam_and_content_with_the_same_id_keep_their_own_titles() -> None:
    rows = [
        (1, 1, EXAM, "exam_failed", "2025-03-18 10:00", 40.0),
        (1, 1, EXAM, "exam_failed", "2025-03-19 10:00", 45.0),
        (1, 1, EXAM, "content_started", "2025-03-10 10:00", None),  # Contents.id 100: a video
    ]
    frame = events(rows)
    frame["activity_title"] = ["Quiz", "Quiz", "Intro video"]
    frame["content_type"] = [None, None, "video"]
    out = assess_risk(frame, passed_of([]), AS_OF, CUTOFF, "UTC")
    details = [r["detail"] for r in out.loc[0, "reasons"]]
    assert details[0] == "failed Quiz 2 times in a row"
    assert details[-1] == "started Intro video over 7 days ago and has not finished it"


def test_missing_titles_read_as_plain_words() -> None:
    rows = [
        (1, 1, EXAM, "exam_failed", "2025-03-18 10:00", 40.0),
        (1, 1, EXAM, "exam_failed", "2025-03-19 10:00", 45.0),
    ]
    frame = events(rows).assign(activity_title=None)
    out = assess_risk(frame, passed_of([]), AS_OF, CUTOFF, "UTC")
    assert [r["detail"] for r in out.loc[0, "reasons"]] == [
        "failed an exam 2 times in a row",
        "has failed an exam and not passed yet",
    ]


@pytest.mark.unit
def test_digest_cadence_course_preference_over_all_over_default() -> None:
    assert rd.cadence("weekly", 7, {}, None) == "weekly"
    assert rd.cadence("weekly", 7, {}, "hourly") == "immediate"
    assert rd.cadence("weekly", 7, {7: "daily"}, "off") == "daily"
    assert rd.cadence("weekly", 8, {7: "daily"}, "off") == "off"
    assert not rd.is_due("off", None, dt.datetime(2024, 5, 10, tzinfo=dt.UTC), "UTC")
