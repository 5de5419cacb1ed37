"""Set-based loads on PostgreSQL: the first-load COPY fast path and its fallback to the staged upsert."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa

from lms_activity_pipeline.warehouse import load
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.store import Warehouse

T0 = dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC)


def attempts(*ids: int, score: float = 40.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": list(ids),
            "user_id": [7] * len(ids),
            "exam_id": [3] * len(ids),
            "status": ["graded"] * len(ids),
            "started_at": [T0] * len(ids),
            "submitted_at": [T0 + dt.timedelta(minutes=20)] * len(ids),
            "graded_at": [T0 + dt.timedelta(minutes=30)] * len(ids),
            "score": [score] * len(ids),
            "updated_at": [T0 + dt.timedelta(minutes=30)] * len(ids),
        }
    )


def stored(engine: sa.Engine) -> pd.DataFrame:
    table = wh.raw_exam_attempts
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(sa.select(table).order_by(table.c.id)).mappings().all())


def test_a_first_load_is_copied_and_a_reload_is_merged(pg_url: str) -> None:
    store = Warehouse(pg_url)
    store.migrate()
    engine = store.engine
    with engine.begin() as conn:
        assert load.copy_if_all_new(conn, wh.raw_exam_attempts, attempts(1, 2), ["id"], "_extracted_at") is not None
    first = stored(engine)
    assert first["id"].tolist() == [1, 2] and first["_extracted_at"].notna().all()
    assert first["graded_at"].tolist() == [T0 + dt.timedelta(minutes=30)] * 2

    with engine.begin() as conn:  # one key is stored now: no COPY, nothing written
        assert load.copy_if_all_new(conn, wh.raw_exam_attempts, attempts(2, 3), ["id"], "_extracted_at") is None
        result = load.upsert(conn, wh.raw_exam_attempts, attempts(2, 3, score=45), "id", touch="_extracted_at")
    assert (result.inserted, result.updated, result.unchanged) == (1, 1, 0)
    assert stored(engine)["score"].tolist() == [40.0, 45.0, 45.0]


def test_a_failed_copy_rolls_back_to_its_savepoint_and_leaves_the_transaction_usable(pg_url: str) -> None:
    store = Warehouse(pg_url)
    store.migrate()
    engine = store.engine
    with engine.begin() as conn:
        # A key the probe cannot see (it is twice in the frame) makes the COPY hit the unique index.
        assert load.copy_if_all_new(conn, wh.raw_exam_attempts, attempts(5, 5), ["id"], "_extracted_at") is None
        assert load.upsert(conn, wh.raw_exam_attempts, attempts(6), "id", touch="_extracted_at").inserted == 1
    assert stored(engine)["id"].tolist() == [6]


def test_a_stored_key_the_probe_does_not_sample_still_sends_the_frame_through_the_merge(pg_url: str) -> None:
    store = Warehouse(pg_url)
    store.migrate()
    engine = store.engine
    with engine.begin() as conn:
        load.upsert(conn, wh.raw_exam_attempts, attempts(1502, score=10), "id", touch="_extracted_at")
    frame = attempts(*range(1, 3001))
    assert 1502 not in frame["id"].iloc[:: len(frame) // load.PROBE_SAMPLE].tolist()
    with engine.begin() as conn:
        assert load.copy_if_all_new(conn, wh.raw_exam_attempts, frame, ["id"], "_extracted_at") is None
        result = load.upsert(conn, wh.raw_exam_attempts, frame, "id", touch="_extracted_at")
    assert (result.inserted, result.updated) == (2999, 1)
    rows = stored(engine)
    assert len(rows) == 3000 and rows.set_index("id").loc[1502, "score"] == 40.0
