"""Partitioned ingest LMS -> warehouse on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from lms_activity_pipeline import names
from lms_activity_pipeline.lms.reader import LMSReader
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder, t
from lms_activity_pipeline_tests.support.pipeline import Pipeline, metadata


def school(backend: Backend) -> LMSBuilder:
    """Three days of activity: a pass, a failure spanning midnight, a retake, content."""
    b = LMSBuilder(backend.lms_url).school()
    b.attempt(1, 1, 200, "graded", t(3, 10), submitted_at=t(3, 10, 30), graded_at=t(3, 11), score=42)
    b.attempt(2, 2, 200, "graded", t(3, 23, 50), submitted_at=t(4, 0, 20), graded_at=t(4, 9), score=20)
    b.attempt(3, 2, 200, "graded", t(5, 10), submitted_at=t(5, 10, 40), graded_at=t(5, 10, 45), score=35)
    b.attempt(4, 3, 201, "abandoned", t(4, 15), updated_at=t(4, 16))
    b.content_attempt(
        1, 1, 300, "completed", t(3, 9), completed_at=t(3, 9, 20), progress_percent=100, time_spent_seconds=700
    )
    b.content_attempt(
        2, 3, 301, "in_progress", t(4, 9), progress_percent=40, time_spent_seconds=100, updated_at=t(4, 10)
    )
    b.content_attempt(
        3, 2, 302, "in_progress", t(5, 8), progress_percent=92, time_spent_seconds=1150, updated_at=t(5, 8, 30)
    )
    return b.write()


EXPECTED_BY_DAY = {
    "2024-05-03": {
        "exam:1:exam_started",
        "exam:1:exam_completed",
        "exam:1:exam_passed",
        "exam:2:exam_started",
        "content:1:content_started",
        "content:1:content_watched",
        "content:1:content_completed",
    },
    "2024-05-04": {"exam:2:exam_completed", "exam:2:exam_failed", "exam:4:exam_started", "content:2:content_started"},
    "2024-05-05": {
        "exam:3:exam_started",
        "exam:3:exam_completed",
        "exam:3:exam_passed",
        "content:3:content_started",
        "content:3:content_watched",
    },
}


def test_each_partition_gets_exactly_its_days_events(backend: Backend) -> None:
    school(backend)
    pipe = Pipeline(backend)
    seen: set[str] = set()
    for day, expected in EXPECTED_BY_DAY.items():
        result = pipe.ingest(day)
        new = set(pipe.event_ids()) - seen
        assert new == expected, day
        seen |= new
        meta = metadata(result, "lms_activity_events")
        assert meta["rows_inserted"] == len(expected)
        assert meta["partition_window"].startswith(f"{day}T00:00")
        assert sum(
            meta[f"events_{k}"]
            for k in (
                "exam_started",
                "exam_completed",
                "exam_passed",
                "exam_failed",
                "content_started",
                "content_watched",
                "content_completed",
            )
        ) == len(expected)

    events = pipe.events().set_index("event_key")
    failed = events.loc["exam:2:exam_failed"]
    assert failed["student_username"] == "bob" and failed["mentor_username"] == "mentor_m"
    assert failed["activity_title"] == "Quadratics quiz" and failed["course_title"] == "Algebra I"
    assert failed["activity_metadata"]["score"] == 20 and failed["activity_metadata"]["attempt_number"] == 1
    assert events.loc["exam:3:exam_passed", "activity_metadata"]["attempt_number"] == 2
    assert not events["processed_for_ai"].any()
    assert pipe.count(wh.raw_exam_attempts) == 4 and pipe.count(wh.raw_content_attempts) == 3


def test_reprocessing_and_range_backfill_keep_ids_and_flags(backend: Backend) -> None:
    school(backend)
    pipe = Pipeline(backend)
    pipe.ingest("2024-05-03")
    pipe.ingest("2024-05-04")
    before = pipe.event_ids()
    table = wh.lms_activity_events
    pipe.execute(table.update().where(table.c.event_key == "exam:2:exam_failed").values(processed_for_ai=True))

    again = pipe.ingest("2024-05-03")
    assert metadata(again, "lms_activity_events")["rows_inserted"] == 0
    assert metadata(again, "lms_activity_events")["rows_updated"] == 0
    backfill = pipe.ingest("2024-05-03", "2024-05-05")  # one run over three days
    assert pipe.instance.get_runs_count() == 4
    assert metadata(backfill, "lms_activity_events")["rows_inserted"] == len(EXPECTED_BY_DAY["2024-05-05"])

    after = pipe.event_ids()
    assert {k: after[k] for k in before} == before
    assert len(after) == sum(len(v) for v in EXPECTED_BY_DAY.values())
    flags = pipe.events().set_index("event_key")["processed_for_ai"]
    assert flags["exam:2:exam_failed"] and flags.sum() == 1


def test_lms_change_updates_the_event_in_place(backend: Backend) -> None:
    b = school(backend)
    pipe = Pipeline(backend)
    pipe.ingest("2024-05-03", "2024-05-05")
    ids = pipe.event_ids()
    b.execute('UPDATE "Attempts" SET score = 30 WHERE id = 1')  # regraded: now a failure too
    result = pipe.ingest("2024-05-03")
    meta = metadata(result, "lms_activity_events")
    assert (meta["rows_updated"], meta["rows_inserted"]) == (2, 1)  # started/completed rescored; failed is new
    events = pipe.events().set_index("event_key")
    assert events.loc["exam:1:exam_started", "activity_metadata"]["score"] == 30
    assert pipe.event_ids()["exam:1:exam_started"] == ids["exam:1:exam_started"]
    assert "exam:1:exam_failed" in events.index and "exam:1:exam_passed" in events.index  # history is kept


def test_first_seen_time_of_watched_content_is_kept(backend: Backend) -> None:
    b = school(backend)
    pipe = Pipeline(backend)
    pipe.ingest("2024-05-05")
    first = pipe.events().set_index("event_key").loc["content:3:content_watched", "timestamp"]
    b.execute(
        'UPDATE "ContentAttempts" SET progress_percent = 95, time_spent_seconds = 1400, updated_at = :u WHERE id = 3',
        u=t(5, 18),
    )
    pipe.ingest("2024-05-05")
    events = pipe.events().set_index("event_key")
    assert events.loc["content:3:content_watched", "timestamp"] == first
    watched = events.loc["content:3:content_watched", "activity_metadata"]
    assert (watched["progress_percent"], watched["time_spent_seconds"]) == (92, 1150)  # as when it was watched
    started = events.loc["content:3:content_started", "activity_metadata"]
    assert (started["progress_percent"], started["time_spent_seconds"]) == (95, 1400)  # the row as it is now


def test_completed_content_keeps_its_time_spent_when_watched_again(backend: Backend) -> None:
    """No look-ahead into ai_ready_events: re-watching a finished video later changes neither the
    completion event's time spent nor the day's content minutes."""
    b = school(backend)
    pipe = Pipeline(backend)
    pipe.ingest("2024-05-03")
    b.execute('UPDATE "ContentAttempts" SET time_spent_seconds = 5400, updated_at = :u WHERE id = 1', u=t(9, 12))
    result = pipe.ingest("2024-05-03")
    assert metadata(result, "lms_activity_events")["rows_updated"] == 1  # content_started shows the row as it is
    events = pipe.events().set_index("event_key")
    assert events.loc["content:1:content_completed", "activity_metadata"]["time_spent_seconds"] == 700
    assert pipe.ai_ready().loc["content:1:content_completed", "time_spent_seconds"] == 700
    assert pipe.daily().loc[(1, "2024-05-03"), "content_minutes"] == 700 / 60


def test_only_monitored_event_types_are_stored(backend: Backend) -> None:
    school(backend)
    pipe = Pipeline(backend, LMS_EVENT_TYPES_TO_MONITOR="exam_failed,content_watched")
    pipe.ingest("2024-05-03", "2024-05-05")
    assert set(pipe.event_ids()) == {"exam:2:exam_failed", "content:1:content_watched", "content:3:content_watched"}


def test_bad_rows_are_skipped_counted_and_the_rest_is_stored(backend: Backend) -> None:
    b = LMSBuilder(backend.lms_url, strict=False).school()
    b.attempt(1, 1, 200, "graded", t(3, 10), submitted_at=t(3, 11), score=40)  # good
    b.attempt(2, None, 200, "in_progress", t(3, 10))  # NULL user
    b.attempt(3, 1, 999, "in_progress", t(3, 10))  # unknown exam
    b.attempt(4, 1, 200, "graded", t(3, 10), submitted_at=t(3, 11), score="-5")  # negative score
    b.attempt(5, 1, 200, "graded", t(3, 10), submitted_at=t(3, 11), score="forty")  # text in a numeric column
    b.content_attempt(1, 2, 301, "in_progress", t(3, 9), progress_percent="140")  # impossible percentage
    b.content_attempt(2, 2, 301, "in_progress", t(3, 9), progress_percent="10")  # good
    b.write()
    pipe = Pipeline(backend)
    result = pipe.ingest("2024-05-03")

    assert set(pipe.event_ids()) == {
        "exam:1:exam_started",
        "exam:1:exam_completed",
        "exam:1:exam_passed",
        "content:2:content_started",
    }
    raw_meta = metadata(result, "raw_exam_attempts")
    assert raw_meta["rows_extracted"] == 5 and raw_meta["rows_rejected"] == 3
    assert "score: negative value -5.0" in raw_meta["rejected_preview"]
    assert "score: invalid or missing value forty" in raw_meta["rejected_preview"]
    assert metadata(result, "raw_content_attempts")["rows_rejected"] == 1
    events_meta = metadata(result, "lms_activity_events")
    assert events_meta["rows_rejected"] == 1 and "exam_id: unknown exam 999" in events_meta["rejected_preview"]
    logs = [e.message for e in pipe.instance.all_logs(result.run_id) if "skipped Attempts row id=2" in e.message]
    assert logs, "each skipped row is logged with its reason"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_junk_is_rejected_and_counted_never_lost_or_fatal(backend: Backend) -> None:
    """What a SQLite LMS can hold in any column: out-of-range numbers, unreadable times, text ids.
    Before, the first sank the whole run and the unreadable times vanished uncounted."""
    b = LMSBuilder(backend.lms_url, strict=False).school()
    b.attempt(1, 1, 200, "graded", t(3, 10), submitted_at=t(3, 11), score=40).write()  # good
    insert = (
        'INSERT INTO "Attempts" (id, user_id, exam_id, status, started_at, submitted_at, score, updated_at) '
        "VALUES (:id, :user, 200, 'submitted', :started, :submitted, :score, :updated)"
    )
    day3 = {"started": "2024-05-03 10:00:00", "submitted": "2024-05-03 10:30:00", "score": None}
    b.execute(insert, id="9223372036854775808", user=1, updated="2024-05-03 10:30:00", **day3)  # id beyond BIGINT
    b.execute(insert, id=7, user=1e20, updated="2024-05-03 10:30:00", **day3)  # a REAL no BIGINT can hold
    b.execute(insert, id=8, user=1, updated="garbage", **day3)  # unreadable time
    b.execute(insert, id=9, user=1, updated=1714730000, **day3)  # epoch seconds, not ISO-8601 text
    b.execute(insert, id="forty", user=1, updated="2024-05-03 10:30:00", **{**day3, "score": "x"})
    pipe = Pipeline(backend)
    result = pipe.ingest("2024-05-03")

    assert set(pipe.event_ids()) == {"exam:1:exam_started", "exam:1:exam_completed", "exam:1:exam_passed"}
    meta = metadata(result, "raw_exam_attempts")
    assert (meta["rows_extracted"], meta["rows_rejected"]) == (6, 5)
    preview = meta["rejected_preview"]
    for reason in (
        "id: invalid or missing value 9.223372036854776e+18",  # SQLite stored it as a REAL
        "user_id: invalid or missing value 1e+20",
        "updated_at: invalid or missing value garbage",
        "updated_at: invalid or missing value 1714730000",
        "id: invalid or missing value forty",
    ):
        assert reason in preview, reason


def test_lms_sessions_are_read_only(backend: Backend) -> None:
    school(backend)
    lms = LMSReader(backend.lms_url)
    with pytest.raises(DBAPIError, match=r"read-only|readonly"), lms.engine.begin() as conn:
        conn.execute(sa.text('UPDATE "Attempts" SET score = 0'))
    with lms.engine.connect() as conn:
        assert conn.execute(sa.text('SELECT score FROM "Attempts" WHERE id = 1')).scalar() == 42


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sqlite_uri_urls_are_read_only_too(backend: Backend) -> None:
    school(backend)
    path = backend.lms_url.removeprefix("sqlite:///")
    lms = LMSReader(f"sqlite:///file:{path}?uri=true")
    with lms.engine.connect() as conn:
        assert conn.execute(sa.text('SELECT count(*) FROM "Attempts"')).scalar() == 4
    with pytest.raises(DBAPIError, match="readonly"), lms.engine.begin() as conn:
        conn.execute(sa.text('DELETE FROM "Attempts"'))


def test_a_range_processed_in_one_day_pieces_stores_the_same_events(backend: Backend) -> None:
    school(backend)
    pipe = Pipeline(backend)
    one_day = {"ops": {name: {"config": {"chunk_days": 1}} for name in names.INGEST_ASSETS}}
    result = pipe.ingest("2024-05-03", "2024-05-05", run_config=one_day)
    assert set(pipe.event_ids()) == set().union(*EXPECTED_BY_DAY.values())
    meta = metadata(result, "lms_activity_events")
    assert meta["rows_inserted"] == sum(len(v) for v in EXPECTED_BY_DAY.values())
    events = pipe.events().set_index("event_key")
    assert events.loc["exam:3:exam_passed", "activity_metadata"]["attempt_number"] == 2  # retake across pieces
    assert metadata(result, "raw_exam_attempts")["rows_inserted"] == 4


def test_a_range_run_gives_each_partition_its_own_row_count(backend: Backend) -> None:
    """One run over three days: each day's materialisation counts that day's rows, not the run's."""
    school(backend)
    pipe = Pipeline(backend)
    result = pipe.ingest("2024-05-03", "2024-05-05")
    for asset, expected in (
        (names.LMS_ACTIVITY_EVENTS, {day: len(keys) for day, keys in EXPECTED_BY_DAY.items()}),
        (names.AI_READY_EVENTS, {day: len(keys) for day, keys in EXPECTED_BY_DAY.items()}),
        (names.STUDENT_DAILY_ACTIVITY, {"2024-05-03": 2, "2024-05-04": 2, "2024-05-05": 1}),
        (names.RAW_EXAM_ATTEMPTS, {"2024-05-03": 2, "2024-05-04": 1, "2024-05-05": 1}),  # by started_at
    ):
        counts = {
            e.partition: e.materialization.metadata[names.ROW_COUNT].value
            for e in result.get_asset_materialization_events()
            if e.asset_key.to_user_string() == asset
        }
        assert counts == expected, asset
