"""Asset checks: each passes on a good table and fails, with its severity and offending rows, on a crafted bad one."""

from __future__ import annotations

import datetime as dt
import re

import sqlalchemy as sa
from dagster import AssetCheckSeverity, ExecuteInProcessResult

from lms_activity_pipeline import db
from lms_activity_pipeline.defs.runs import run_ingest
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.engine import translated
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder, t
from lms_activity_pipeline_tests.support.pipeline import Pipeline, checks, like

DAY = "2024-05-03"
EVENT_CHECKS = {
    "event_key_unique",
    "event_types_known",
    "percentages_in_range",
    "no_future_events",
    "students_exist_in_lms",
}


def school(backend: Backend) -> LMSBuilder:
    b = LMSBuilder(backend.lms_url).school()
    b.attempt(1, 1, 200, "graded", t(3, 10), submitted_at=t(3, 10, 30), graded_at=t(3, 11), score=42)
    b.attempt(2, 2, 200, "graded", t(3, 12), submitted_at=t(3, 12, 30), graded_at=t(3, 13), score=20)
    b.content_attempt(
        1, 1, 300, "completed", t(3, 9), completed_at=t(3, 9, 20), progress_percent=100, time_spent_seconds=700
    )
    return b.write()


def run(pipe: Pipeline, first: str = DAY, last: str | None = None) -> ExecuteInProcessResult:
    return run_ingest(pipe.defs, pipe.instance, first, last, raise_on_error=False)


def materialised(result: ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def add_event(pipe: Pipeline, key: str, event_type: str, when: dt.datetime, student_id: int = 1, **meta: float) -> None:
    """An event written straight into the warehouse, as a buggy writer or a manual fix could."""
    row = {
        "event_key": key,
        "event_type": event_type,
        "student_id": student_id,
        "timestamp": when,
        "activity_metadata": meta,
    }
    pipe.execute(wh.lms_activity_events.insert().values(**row))


def test_every_check_passes_on_a_good_partition(backend: Backend) -> None:
    school(backend)
    pipe = Pipeline(backend)
    found = checks(pipe.ingest(DAY))
    assert set(found) == EVENT_CHECKS | {"one_row_per_event"}
    assert all(e.passed for e in found.values())
    assert "2024-05-03 00:00 .. 2024-05-04 00:00" in found["event_types_known"].description
    blocking = {name for name, e in found.items() if e.blocking}
    assert blocking == {"event_key_unique", "event_types_known", "percentages_in_range"}
    assert pipe.audit().success and all(e.passed for e in checks(pipe.audit()).values())


def test_unknown_event_type_blocks_the_feature_tables_and_checks_stay_in_their_partition(backend: Backend) -> None:
    school(backend)
    pipe = Pipeline(backend)
    pipe.ingest(DAY)
    add_event(pipe, "exam:999:exam_cheated", "exam_cheated", t(4, 14))  # another day
    assert checks(pipe.ingest(DAY))["event_types_known"].passed  # scoped to 05-03
    assert not checks(pipe.audit())["event_types_known"].passed  # the whole table

    add_event(pipe, "exam:998:exam_cheated", "exam_cheated", t(3, 14))
    result = run(pipe)
    check = checks(result)["event_types_known"]
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert check.description.startswith("events of unknown type: 1 in events of 2024-05-03 00:00")
    assert check.metadata["offending_rows"].value == 1 and "exam:998:exam_cheated" in check.metadata["preview"].value
    assert not result.success
    assert "lms_activity_events" in materialised(result)
    assert not materialised(result) & {"ai_ready_events", "student_daily_activity"}  # blocked downstream

    pipe.execute(wh.lms_activity_events.delete().where(wh.lms_activity_events.c.event_type == "exam_cheated"))
    result = run(pipe)
    assert result.success and checks(result)["event_types_known"].passed and "ai_ready_events" in materialised(result)


def test_percentages_outside_0_to_100_block(backend: Backend) -> None:
    school(backend)
    pipe = Pipeline(backend)
    add_event(pipe, "exam:998:exam_passed", "exam_passed", t(3, 14), percentage=140.0)
    add_event(pipe, "content:998:content_watched", "content_watched", t(3, 15), progress_percent=-5.0)
    result = run(pipe)
    check = checks(result)["percentages_in_range"]
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert check.metadata["offending_rows"].value == 2
    preview = check.metadata["preview"].value
    assert "exam:998:exam_passed" in preview and "140" in preview and "content:998:content_watched" in preview
    assert not result.success and "ai_ready_events" not in materialised(result)


def test_future_events_warn_without_blocking(backend: Backend) -> None:
    school(backend)
    pipe = Pipeline(backend)
    add_event(pipe, "exam:997:exam_started", "exam_started", dt.datetime.now(dt.UTC) + dt.timedelta(days=2))
    result = run(pipe)
    check = checks(result)["no_future_events"]
    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    assert check.description.startswith("events in the future: 1 in the whole table")
    assert "exam:997:exam_started" in check.metadata["preview"].value
    assert result.success and {"ai_ready_events", "student_daily_activity"} <= materialised(result)


def test_students_missing_from_the_lms_warn(backend: Backend) -> None:
    lms = school(backend)
    pipe = Pipeline(backend)
    assert checks(pipe.ingest(DAY))["students_exist_in_lms"].passed
    lms.execute('DELETE FROM "Users" WHERE id = 2')  # bob's account is deleted; his events stay
    result = run(pipe)
    check = checks(result)["students_exist_in_lms"]
    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    assert check.metadata["offending_rows"].value == 1
    assert re.search(r"\|\s+2 \|\s+3 \|", check.metadata["preview"].value)  # student 2, 3 events
    assert result.success


def test_duplicate_event_keys_block(backend: Backend) -> None:
    """A warehouse whose events table lost its unique constraint (e.g. created by hand) is caught."""
    school(backend)
    engine = translated(db.create_engine(backend.warehouse_url), "lms_activity")
    legacy = sa.MetaData(schema=wh.SCHEMA_TOKEN)
    table = wh.lms_activity_events
    sa.Table(table.name, legacy, *[like(c, unique=False) for c in table.columns])
    with engine.begin() as conn:
        if backend.name == "postgresql":
            conn.execute(sa.text("CREATE SCHEMA lms_activity"))
        legacy.create_all(conn)
    pipe = Pipeline(backend)
    for hour in (9, 10):
        add_event(pipe, "exam:5:exam_started", "exam_started", t(7, hour))
    result = run(pipe, "2024-05-07")  # a day without LMS activity: the events upsert has nothing to write
    check = checks(result)["event_key_unique"]
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    assert check.metadata["offending_rows"].value == 1 and "exam:5:exam_started" in check.metadata["preview"].value
    assert not result.success and "ai_ready_events" not in materialised(result)
    assert checks(run(pipe, DAY.replace("03", "06")))["event_key_unique"].passed  # other days are clean


def test_one_feature_row_per_event(backend: Backend) -> None:
    school(backend)
    pipe = Pipeline(backend)
    pipe.ingest(DAY)
    ai = wh.ai_ready_events
    victim = pipe.event_ids()["exam:1:exam_passed"]
    pipe.execute(ai.delete().where(ai.c.event_id == victim))
    pipe.execute(
        ai.insert().values(
            event_id=99_999,
            event_key="exam:99:exam_started",
            student_id=1,
            event_type="exam_started",
            timestamp=t(3, 16),
            student_events_7d=0,
            hour_of_day=16,
            day_of_week=4,
        )
    )
    audit = pipe.audit()
    check = checks(audit)["one_row_per_event"]
    assert (
        not check.passed
        and check.severity == AssetCheckSeverity.ERROR
        and ": 2 in the whole table" in check.description
    )
    preview = check.metadata["preview"].value
    assert "exam:1:exam_passed" in preview and "event has no ai_ready_events row" in preview
    assert "exam:99:exam_started" in preview and "has no event in the window" in preview
    assert all(e.passed for name, e in checks(audit).items() if name != "one_row_per_event")

    assert checks(pipe.ingest(DAY))["one_row_per_event"].passed  # recomputing the partition repairs it
    assert pipe.count(ai) == len(pipe.events())
