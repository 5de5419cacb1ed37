"""``ai_ready_events`` and ``student_daily_activity`` through real ingest runs, checked by hand."""

from __future__ import annotations

import pandas as pd
from dagster import AssetKey, TableSchema

from lms_activity_pipeline import api
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder, t
from lms_activity_pipeline_tests.support.pipeline import Pipeline, metadata

DAYS = ("2024-05-03", "2024-05-04", "2024-05-05")


def crafted(backend: Backend) -> LMSBuilder:
    """Bob fails the quiz twice (the second attempt spans midnight) then passes; Carol's video spans the
    05-04/05-05 partition boundary; Dave's only event is on 05-05; Alice has one event per day on 05-03 and 05-05."""
    b = LMSBuilder(backend.lms_url).school().user(4, "dave").assign(5, 4, 11, t(1, 0))
    b.attempt(11, 2, 200, "graded", t(3, 10), submitted_at=t(3, 10, 30), graded_at=t(3, 11), score=20)
    b.attempt(12, 2, 200, "graded", t(3, 23, 50), submitted_at=t(4, 0, 20), graded_at=t(4, 0, 25), score=30)
    b.attempt(13, 2, 200, "graded", t(5, 10), submitted_at=t(5, 10, 40), graded_at=t(5, 10, 45), score=42)
    b.content_attempt(
        21, 3, 300, "completed", t(4, 23, 55), completed_at=t(5, 0, 5), progress_percent=100, time_spent_seconds=600
    )
    b.content_attempt(
        22, 4, 301, "in_progress", t(5, 12), progress_percent=30, time_spent_seconds=90, updated_at=t(5, 12, 5)
    )
    b.content_attempt(
        23, 1, 301, "in_progress", t(3, 9), progress_percent=10, time_spent_seconds=60, updated_at=t(3, 9, 1)
    )
    b.attempt(14, 1, 201, "abandoned", t(5, 9), updated_at=t(5, 9, 30))
    return b.write()


def ingest_day_by_day(pipe: Pipeline) -> None:
    for day in DAYS:
        pipe.ingest(day)


def test_features_by_hand_across_midnight_and_partitions(backend: Backend) -> None:
    crafted(backend)
    pipe = Pipeline(backend)
    ingest_day_by_day(pipe)  # every day in its own run: history must come from earlier partitions
    ai = pipe.ai_ready()

    bob = ai.loc[
        [f"exam:{a}:{e}" for a in (11, 12, 13) for e in ("exam_started", "exam_completed")]
        + ["exam:11:exam_failed", "exam:12:exam_failed", "exam:13:exam_passed"]
    ]
    assert bob["attempt_number"].tolist() == [1, 1, 2, 2, 3, 3, 1, 2, 3]
    assert bob["prior_failures"].tolist() == [0, 0, 1, 1, 2, 2, 0, 1, 2]
    passed = ai.loc["exam:13:exam_passed"]
    assert passed["score_pct"] == 84.0 and bool(passed["passed"]) and passed["time_spent_seconds"] == 2400
    assert passed["student_events_7d"] == 8 and passed["seconds_since_prev_event"] == 300
    failed = ai.loc["exam:12:exam_failed"]
    assert failed["score_pct"] == 60.0 and not bool(failed["passed"])
    assert pd.isna(ai.loc["exam:12:exam_started", "score_pct"]) and pd.isna(ai.loc["exam:12:exam_completed", "passed"])
    # 23:50 on 05-03 -> 00:20 on 05-04: previous event in the previous partition
    assert ai.loc["exam:12:exam_completed", "seconds_since_prev_event"] == 1800
    assert ai.loc["exam:12:exam_completed", "student_events_7d"] == 4
    assert (ai.loc["exam:12:exam_completed", "hour_of_day"], ai.loc["exam:12:exam_completed", "day_of_week"]) == (0, 5)

    # Carol: started 23:55 on 05-04, watched and completed 00:05 on 05-05 (same instant: one of them is 0 s after the other)
    assert pd.isna(ai.loc["content:21:content_started", "seconds_since_prev_event"])
    after = sorted(ai.loc[["content:21:content_watched", "content:21:content_completed"], "seconds_since_prev_event"])
    assert after == [0, 600]
    completed = ai.loc["content:21:content_completed"]
    assert (
        completed["progress_pct"] == 100
        and completed["time_spent_seconds"] == 600
        and pd.isna(completed["prior_failures"])
    )
    assert pd.isna(ai.loc["content:21:content_started", "progress_pct"])  # not known when the video started

    dave = ai.loc["content:22:content_started"]  # a student with no prior events
    assert pd.isna(dave["seconds_since_prev_event"]) and dave["student_events_7d"] == 0
    assert pd.isna(dave["attempt_number"]) and pd.isna(dave["prior_failures"])
    alice = ai.loc["exam:14:exam_started"]
    assert alice["seconds_since_prev_event"] == 2 * 86400 and alice["student_events_7d"] == 1
    assert len(ai) == len(pipe.events()) == 15


def test_daily_activity_by_hand(backend: Backend) -> None:
    crafted(backend)
    pipe = Pipeline(backend)
    ingest_day_by_day(pipe)
    daily = pipe.daily()
    bob3, bob4, bob5 = (daily.loc[(2, d)] for d in DAYS)
    assert (bob3["events_total"], bob3["exam_started_count"], bob3["exam_failed_count"], bob3["exams_failed"]) == (
        4,
        2,
        1,
        1,
    )
    assert bob3["mean_score_pct"] == 40.0 and bob4["mean_score_pct"] == 60.0
    assert (bob5["exams_passed"], bob5["exams_failed"], bob5["mean_score_pct"]) == (1, 0, 84.0)
    assert bob3["first_event_at"] == pd.Timestamp(t(3, 10)) and bob3["last_event_at"] == pd.Timestamp(t(3, 23, 50))
    carol = daily.loc[(3, "2024-05-05")]
    assert (carol["content_watched_count"], carol["content_completed_count"], carol["content_minutes"]) == (1, 1, 10.0)
    assert daily.loc[(3, "2024-05-04"), "content_minutes"] == 0 and pd.isna(
        daily.loc[(3, "2024-05-04"), "mean_score_pct"]
    )
    assert daily.loc[(4, "2024-05-05"), "student_username"] == "dave"
    assert sorted(daily.index) == sorted(
        [(2, d) for d in DAYS]
        + [(3, "2024-05-04"), (3, "2024-05-05"), (4, "2024-05-05"), (1, "2024-05-03"), (1, "2024-05-05")]
    )
    assert int(daily["events_total"].sum()) == 15


def test_range_backfill_reproduces_the_day_by_day_tables(backend: Backend) -> None:
    crafted(backend)
    pipe = Pipeline(backend)
    ingest_day_by_day(pipe)
    before_ai = pipe.ai_ready().drop(columns="updated_at")
    before_daily = pipe.daily().drop(columns="updated_at")
    result = pipe.ingest(DAYS[0], DAYS[-1])  # one run over the three days
    meta = metadata(result, "ai_ready_events")
    assert (meta["rows_inserted"], meta["rows_updated"], meta["rows_unchanged"]) == (0, 0, 15)
    assert metadata(result, "student_daily_activity")["rows_unchanged"] == 8
    pd.testing.assert_frame_equal(pipe.ai_ready().drop(columns="updated_at"), before_ai)
    pd.testing.assert_frame_equal(pipe.daily().drop(columns="updated_at"), before_daily)


def test_rerunning_an_earlier_day_with_new_data_brings_later_days_up_to_date(backend: Backend) -> None:
    """A failed attempt committed late on 05-04 is ingested by re-running 05-04 alone: the features of
    Bob's 05-05 events depend on it (prior failures, previous event, events in 7 days) and follow."""
    lms = crafted(backend)
    pipe = Pipeline(backend)
    ingest_day_by_day(pipe)
    before = pipe.ai_ready()
    lms.attempt(15, 2, 200, "graded", t(4, 20), submitted_at=t(4, 20, 30), graded_at=t(4, 20, 40), score=10).write()
    result = pipe.ingest("2024-05-04")
    meta = metadata(result, "ai_ready_events")
    later = ["exam:13:exam_started", "exam:13:exam_completed", "exam:13:exam_passed"]
    assert meta["later_events_recomputed"] == 3 and meta["later_events_changed"] == 3  # Bob's three on 05-05
    ai = pipe.ai_ready()
    assert ai.loc[later, "prior_failures"].tolist() == [3, 3, 3]
    assert ai.loc["exam:13:exam_started", "seconds_since_prev_event"] == (t(5, 10) - t(4, 20, 40)).total_seconds()
    assert ai.loc[later, "student_events_7d"].tolist() == [s + 3 for s in before.loc[later, "student_events_7d"]]
    untouched = [k for k in before.index if not k.startswith(("exam:13:", "exam:15:"))]
    pd.testing.assert_frame_equal(
        ai.loc[untouched].drop(columns="updated_at"), before.loc[untouched].drop(columns="updated_at")
    )

    # The same run once more changes nothing, here or later.
    again = metadata(pipe.ingest("2024-05-04"), "ai_ready_events")
    assert (again["later_events_recomputed"], again["rows_updated"]) == (0, 0)


def test_history_older_than_the_detail_lookback_comes_from_sql_aggregates(backend: Backend) -> None:
    """Failures and the previous event three weeks back are read through the SQL aggregates (no detail rows)."""
    lms = LMSBuilder(backend.lms_url).school()
    lms.attempt(11, 2, 200, "graded", t(1, 10), submitted_at=t(1, 10, 30), graded_at=t(1, 11), score=20)
    lms.attempt(12, 2, 200, "graded", t(2, 10), submitted_at=t(2, 10, 30), graded_at=t(2, 11), score=20)
    lms.attempt(13, 2, 200, "graded", t(20, 10), submitted_at=t(20, 10, 30), graded_at=t(20, 11), score=45)
    lms.write()
    pipe = Pipeline(backend, LMS_TIMEZONE="America/New_York")
    for day in ("2024-05-01", "2024-05-02", "2024-05-20"):
        pipe.ingest(day)
    row = pipe.ai_ready().loc["exam:13:exam_started"]
    assert (row["prior_failures"], row["attempt_number"], row["student_events_7d"]) == (2, 3, 0)
    assert row["seconds_since_prev_event"] == (t(20, 10) - t(2, 11)).total_seconds()
    assert row["hour_of_day"] == 6  # 10:00 UTC in New York (EDT)


def test_reprocessing_keeps_processed_flags_in_both_tables(backend: Backend) -> None:
    crafted(backend)
    pipe = Pipeline(backend)
    ingest_day_by_day(pipe)
    ids = pipe.event_ids()
    failures = [ids["exam:11:exam_failed"], ids["exam:12:exam_failed"]]
    assert api.mark_processed(failures, engine=pipe.warehouse.engine) == 2
    assert pipe.ai_ready().loc[["exam:11:exam_failed", "exam:12:exam_failed"], "processed_for_ai"].all()

    pipe.ingest(DAYS[0], DAYS[1])  # recompute both partitions
    events = pipe.events().set_index("event_key")["processed_for_ai"]
    mirror = pipe.ai_ready()["processed_for_ai"]
    assert set(events[events].index) == set(mirror[mirror].index) == {"exam:11:exam_failed", "exam:12:exam_failed"}


def test_mirror_catches_up_when_flags_change_behind_its_back(backend: Backend) -> None:
    """A flag set directly on the event (not through the API) reaches ai_ready_events on the next run."""
    crafted(backend)
    pipe = Pipeline(backend)
    pipe.ingest(DAYS[0])
    table = wh.lms_activity_events
    pipe.execute(table.update().where(table.c.event_key == "exam:11:exam_started").values(processed_for_ai=True))
    assert not pipe.ai_ready().loc["exam:11:exam_started", "processed_for_ai"]
    pipe.ingest(DAYS[0])
    assert pipe.ai_ready().loc["exam:11:exam_started", "processed_for_ai"]


def test_local_time_zone_sets_days_and_hours(backend: Backend) -> None:
    crafted(backend)
    pipe = Pipeline(backend, LMS_TIMEZONE="Asia/Tokyo")  # UTC+9: 23:50 UTC on 05-03 is 08:50 on 05-04
    pipe.ingest("2024-05-03", "2024-05-06")
    ai = pipe.ai_ready()
    started = ai.loc["exam:12:exam_started"]
    assert (started["hour_of_day"], started["day_of_week"]) == (8, 5)  # Saturday morning in Tokyo
    daily = pipe.daily()
    assert daily.loc[(2, "2024-05-04"), "events_total"] == 3  # exam 12 started, completed, failed
    assert daily.loc[(2, "2024-05-03"), "events_total"] == 3  # exam 11


def test_every_asset_carries_its_column_schema(backend: Backend) -> None:
    crafted(backend)
    pipe = Pipeline(backend)
    result = pipe.ingest(DAYS[0])
    tables = {
        "raw_exam_attempts": wh.raw_exam_attempts,
        "raw_content_attempts": wh.raw_content_attempts,
        "lms_activity_events": wh.lms_activity_events,
        "ai_ready_events": wh.ai_ready_events,
        "student_daily_activity": wh.student_daily_activity,
    }
    graph = pipe.defs.resolve_asset_graph()
    for name, table in tables.items():
        schema = metadata(result, name)["dagster/column_schema"]
        assert isinstance(schema, TableSchema)
        assert [c.name for c in schema.columns] == [c.name for c in table.columns]
        assert all(c.description for c in schema.columns), name
        assert graph.get(AssetKey(name)).metadata["dagster/column_schema"] == schema
    ai_columns = {c.name: c for c in metadata(result, "ai_ready_events")["dagster/column_schema"].columns}
    assert ai_columns["score_pct"].type == "float" and ai_columns["timestamp"].type == "timestamp with time zone"
    assert ai_columns["event_id"].constraints.unique and ai_columns["passed"].constraints.nullable

    # Every other warehouse table is declared too, so the catalog shows all of them with their columns.
    declared = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert declared == {t.name for t in wh.METADATA.sorted_tables}
    for table in (wh.lms_event_log, wh.zulip_user_cache, wh.lms_monitor_state):
        schema = graph.get(AssetKey(table.name)).metadata["dagster/column_schema"]
        assert [c.name for c in schema.columns] == [c.name for c in table.columns]
    assert AssetKey("lms_activity_events") in graph.get(AssetKey("lms_event_log")).parent_keys
    notified = pipe.notify()
    [event] = [e for e in notified.get_asset_materialization_events() if e.asset_key == AssetKey("lms_event_log")]
    assert event.materialization.metadata["dagster/row_count"].value == pipe.count(wh.lms_event_log)


def test_a_day_without_events_materialises_empty(backend: Backend) -> None:
    crafted(backend)
    pipe = Pipeline(backend)
    result = pipe.ingest("2024-05-09")
    assert metadata(result, "ai_ready_events")["dagster/row_count"] == 0
    assert pipe.count(wh.ai_ready_events) == 0 and pipe.count(wh.student_daily_activity) == 0
