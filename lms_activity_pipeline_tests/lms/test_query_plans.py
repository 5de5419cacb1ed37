"""The sensor's LMS queries use the updated_at indexes on PostgreSQL (no sequential scans)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from lms_activity_pipeline import db
from lms_activity_pipeline.lms import queries
from lms_activity_pipeline.lms.schema import DEFAULT_PROFILE, REFERENCE

ROWS = 200_000


@pytest.fixture
def big_lms(pg_url: str) -> sa.Engine:
    engine = db.create_engine(pg_url)
    REFERENCE.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                """
                INSERT INTO "Attempts" (id, user_id, exam_id, status, started_at, updated_at)
                SELECT g, g % 5000, g % 40, 'in_progress',
                       timestamptz '2024-01-01' + g * interval '1 minute',
                       timestamptz '2024-01-01' + g * interval '1 minute' + interval '5 minutes'
                FROM generate_series(1, :n) AS g
                """
            ),
            {"n": ROWS},
        )
        conn.execute(
            sa.text(
                """
                INSERT INTO "ContentAttempts" (id, user_id, content_id, status, started_at, updated_at)
                SELECT g, g % 5000, g % 80, 'started',
                       timestamptz '2024-01-01' + g * interval '30 seconds',
                       timestamptz '2024-01-01' + g * interval '30 seconds' + interval '1 minute'
                FROM generate_series(1, :n) AS g
                """
            ),
            {"n": ROWS},
        )
        conn.execute(sa.text('ANALYZE "Attempts"; ANALYZE "ContentAttempts"'))
    return engine


def plan(engine: sa.Engine, stmt: sa.Select) -> str:
    sql = str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        return json.dumps(conn.execute(sa.text(f"EXPLAIN (FORMAT JSON) {sql}")).scalar())


@pytest.mark.parametrize(
    ("logical", "index"), [("attempts", "attempts_updated_at"), ("content_attempts", "content_attempts_updated_at")]
)
def test_change_and_mark_queries_use_the_updated_at_index(big_lms: sa.Engine, logical: str, index: str) -> None:
    since = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=ROWS - 60)
    changed = plan(big_lms, queries.changed_rows(DEFAULT_PROFILE, logical, since, "postgresql"))
    assert "Seq Scan" not in changed and index in changed, changed
    until = since + dt.timedelta(hours=1)
    mark = plan(big_lms, queries.newest_change(DEFAULT_PROFILE, logical, until, "postgresql"))
    assert "Seq Scan" not in mark and index in mark, mark
    oldest = plan(big_lms, queries.oldest_change(DEFAULT_PROFILE, logical, since, until, "postgresql"))
    assert "Seq Scan" not in oldest and index in oldest, oldest


def test_a_recompute_reads_rows_with_unreadable_times_through_the_index(big_lms: sa.Engine) -> None:
    """A day's recompute also reads rows whose times pandas cannot hold (infinity, BC): index ranges, not a scan."""
    day = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=ROWS - 2000)
    window = queries.ExtractWindow(day, day + dt.timedelta(days=1))
    explained = plan(big_lms, queries.exam_attempts(DEFAULT_PROFILE, window, "postgresql"))
    assert "Seq Scan" not in explained and "attempts_updated_at" in explained, explained


def test_every_query_of_a_real_tick_avoids_sequential_scans(
    big_lms: sa.Engine, pg_databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Record every LMS query the real sensor runs in a no-change tick and a tick after 1,000 new rows;
    EXPLAIN each: none may scan a whole table."""
    from lms_activity_pipeline_tests.conftest import Backend
    from lms_activity_pipeline_tests.polling.test_sensor import Tick

    lms_url = big_lms.url.render_as_string(hide_password=False)
    tick = Tick(Backend("postgresql", lms_url, pg_databases.create("lms_wh")))
    assert tick().run_requests  # the first tick plans the history run (one min(started_at) scan, once)
    seen: list[sa.Select] = []
    read_frame = db.read_frame

    def recording(conn: sa.Connection, stmt: sa.Select):
        seen.append(stmt)
        return read_frame(conn, stmt)

    monkeypatch.setattr(db, "read_frame", recording)
    assert not tick().run_requests  # nothing changed
    with big_lms.begin() as conn:
        conn.execute(
            sa.text(
                """INSERT INTO "Attempts" (id, user_id, exam_id, status, started_at, updated_at)
                   SELECT g, g % 5000, 1, 'in_progress', now() - interval '1 minute', now()
                   FROM generate_series(:a, :b) AS g"""
            ),
            {"a": ROWS + 1, "b": ROWS + 1000},
        )
    assert len(tick().run_requests) == 1  # 1,000 new attempts
    assert len(seen) == 4  # two tables x two ticks: one range read each
    for stmt in seen:
        explained = plan(big_lms, stmt)
        assert "Seq Scan" not in explained and "updated_at" in explained, explained


def test_stats_read_the_lms_through_the_updated_at_index(
    big_lms: sa.Engine, pg_databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``monitor --stats`` works out the lag with index lookups on the LMS, never a whole-table scan."""
    from lms_activity_pipeline.lms.reader import LMSReader
    from lms_activity_pipeline.warehouse.freshness import freshness
    from lms_activity_pipeline.warehouse.store import Warehouse

    lms = LMSReader(big_lms.url.render_as_string(hide_password=False))
    warehouse = Warehouse(pg_databases.create("lms_wh"))
    warehouse.migrate()
    seen: list[sa.Select] = []
    read_frame = db.read_frame

    def recording(conn: sa.Connection, stmt: sa.Select):
        seen.append(stmt)
        return read_frame(conn, stmt)

    monkeypatch.setattr(db, "read_frame", recording)
    assert freshness(lms, warehouse.engine).lag_seconds > 0  # nothing ingested: the oldest change is pending
    lms_reads = [s for s in seen if any(t.name in ("Attempts", "ContentAttempts") for t in s.get_final_froms())]
    assert len(lms_reads) == 4  # per table: the oldest pending change, the rows dated in the future
    for stmt in lms_reads:
        explained = plan(big_lms, stmt)
        assert "Seq Scan" not in explained and "updated_at" in explained, explained
