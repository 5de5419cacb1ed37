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


@pytest.mark.parametrize(("logical", "index"), [("attempts", "attempts_updated_at"), ("content_attempts", "content_attempts_updated_at")])
def test_change_and_mark_queries_use_the_updated_at_index(big_lms: sa.Engine, logical: str, index: str) -> None:
    since = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=ROWS - 60)
    changed = plan(big_lms, queries.changed_rows(DEFAULT_PROFILE, logical, since, "postgresql"))
    assert "Seq Scan" not in changed and index in changed, changed
    mark = plan(big_lms, queries.high_water_mark(DEFAULT_PROFILE, logical))
    assert "Seq Scan" not in mark and index in mark, mark
