"""``student_risk`` through real ingest and risk runs: levels and reasons by hand, point in time, the check."""

from __future__ import annotations

import pandas as pd

from lms_activity_pipeline import names
from lms_activity_pipeline.defs.runs import run_student_risk
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder, t
from lms_activity_pipeline_tests.support.pipeline import Pipeline, checks, metadata


def first_week(backend: Backend) -> LMSBuilder:
    """Bob fails the quiz on 05-03 and 05-04; Alice starts the final on 05-03 and goes silent; Carol starts
    the video on 05-03, never finishes it, and reads every day 05-08..05-10."""
    b = LMSBuilder(backend.lms_url).school()
    b.attempt(11, 2, 200, "graded", t(3, 10), submitted_at=t(3, 10, 30), graded_at=t(3, 11), score=20)
    b.attempt(12, 2, 200, "graded", t(4, 10), submitted_at=t(4, 10, 30), graded_at=t(4, 11), score=30)
    b.attempt(13, 1, 201, "abandoned", t(3, 9), updated_at=t(3, 9, 30))
    b.content_attempt(21, 3, 300, "in_progress", t(3, 9), progress_percent=20, time_spent_seconds=60)
    for i, day in enumerate((8, 9, 10)):
        b.content_attempt(30 + i, 3, 301, "completed", t(day, 9), completed_at=t(day, 9, 20), progress_percent=100)
    return b.write()


def later_weeks(b: LMSBuilder) -> None:
    """What happens after: Bob passes on 05-12, Alice comes back on 05-11."""
    b.attempt(14, 2, 200, "graded", t(12, 10), submitted_at=t(12, 10, 30), graded_at=t(12, 11), score=45)
    b.attempt(15, 1, 201, "in_progress", t(11, 9))
    b.write()


def risk_of(pipe: Pipeline, day: str) -> pd.DataFrame:
    frame = pipe.table(wh.student_risk, ["as_of", "student_id", "course_id"])
    return frame[frame["as_of"].astype(str) == day].drop(columns="updated_at").reset_index(drop=True)


def by_student(frame: pd.DataFrame) -> dict[int, dict]:
    return {int(r["student_id"]): r for r in frame.to_dict("records")}


def test_levels_reasons_check_and_point_in_time(backend: Backend) -> None:
    b = first_week(backend)
    pipe = Pipeline(backend)
    pipe.ingest("2024-05-03", "2024-05-10")

    result = run_student_risk(pipe.defs, pipe.instance, "2024-05-04")
    assert checks(result)[names.RISK_REASONS_CHECK].passed
    meta = metadata(result, names.STUDENT_RISK)
    assert (meta["rows_high"], meta["rows_medium"], meta["rows_low"]) == (1, 0, 2)
    day4 = by_student(risk_of(pipe, "2024-05-04"))
    assert day4[2]["risk_level"] == "high" and [r["code"] for r in day4[2]["reasons"]] == [
        "failed_in_row",
        "unpassed_exam",
    ]
    assert day4[2]["reasons"][0]["detail"] == "failed Quadratics quiz 2 times in a row"
    assert day4[1]["risk_level"] == "low" and day4[3]["risk_level"] == "low"

    run_student_risk(pipe.defs, pipe.instance, "2024-05-10")
    day10 = by_student(risk_of(pipe, "2024-05-10"))
    assert [r["code"] for r in day10[1]["reasons"]] == ["inactive"] and day10[1]["risk_level"] == "high"
    assert day10[1]["days_inactive"] > 7
    assert [r["code"] for r in day10[2]["reasons"]] == ["failed_in_row", "unpassed_exam"]
    assert day10[3]["risk_level"] == "medium" and [r["code"] for r in day10[3]["reasons"]] == ["stalled_content"]
    assert day10[3]["streak_days"] == 3 and not day10[3]["on_track"]
    assert set(day10[1]) >= {"risk_score", "model", "mentor_id"} and day10[1]["model"] == "rules-1"
    before = {day: risk_of(pipe, day) for day in ("2024-05-04", "2024-05-10")}

    later_weeks(b)
    pipe.ingest("2024-05-11", "2024-05-12")
    run_student_risk(pipe.defs, pipe.instance, "2024-05-12")
    day12 = by_student(risk_of(pipe, "2024-05-12"))
    assert day12[2]["failed_in_row"] == 0 and "failed_in_row" not in [r["code"] for r in day12[2]["reasons"]]
    assert day12[1]["days_inactive"] < 7

    # The earlier days recomputed now, with later events in the warehouse, give the same rows.
    run_student_risk(pipe.defs, pipe.instance, "2024-05-04", "2024-05-10")
    for day, rows in before.items():
        pd.testing.assert_frame_equal(risk_of(pipe, day), rows)


def test_rerun_of_a_day_replaces_its_rows(backend: Backend) -> None:
    first_week(backend)
    pipe = Pipeline(backend)
    pipe.ingest("2024-05-03", "2024-05-10")
    run_student_risk(pipe.defs, pipe.instance, "2024-05-10")
    first = metadata(run_student_risk(pipe.defs, pipe.instance, "2024-05-10"), names.STUDENT_RISK)
    assert first["rows_unchanged"] == 3 and first["rows_inserted"] == 0 and first["rows_deleted"] == 0
    assert pipe.count(wh.student_risk) == 3
