"""The analyst/AI API on SQLite and PostgreSQL: queue reads, claims, marks, histories, validation."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lms_activity_pipeline import api, db
from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES
from lms_activity_pipeline.warehouse import processing
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.engine import open_warehouse, translated
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.pipeline import like

T0 = dt.datetime(2024, 5, 3, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def warehouse(backend: Backend) -> Iterator[Engine]:
    engine = open_warehouse(backend.warehouse_url, "lms_activity")
    yield engine
    engine.dispose()


def seed(
    engine: Engine, n: int, *, student_of=lambda i: 1 + i % 3, processed=lambda i: False, start: dt.datetime = T0
) -> list[int]:
    """``n`` events one minute apart, types cycling through the seven; returns their ids, oldest first."""
    rows = [
        {
            "event_key": f"exam:{i}:{ALL_EVENT_TYPES[i % 7]}",
            "event_type": ALL_EVENT_TYPES[i % 7],
            "student_id": student_of(i),
            "student_username": f"student{student_of(i)}",
            "activity_id": 200,
            "activity_metadata": {"score": i, "percentage": 50.0},
            "timestamp": start + dt.timedelta(minutes=i),
            "processed_for_ai": processed(i),
        }
        for i in range(n)
    ]
    table = wh.lms_activity_events
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
        return list(conn.execute(sa.select(table.c.event_id).order_by(table.c.timestamp)).scalars())


def test_unprocessed_events_are_oldest_first_filtered_and_limited(warehouse: Engine) -> None:
    ids = seed(warehouse, 14, processed=lambda i: i % 4 == 0)
    queue = api.unprocessed_events(engine=warehouse)
    expected = [ids[i] for i in range(14) if i % 4 != 0]
    assert queue["event_id"].tolist() == expected
    assert not queue["processed_for_ai"].any() and queue["timestamp"].is_monotonic_increasing
    assert str(queue["timestamp"].dt.tz) == "UTC" and queue.loc[0, "activity_metadata"] == {
        "score": 1,
        "percentage": 50.0,
    }
    assert "ai_claim_expires_at" not in queue.columns

    failed = api.unprocessed_events("exam_failed", engine=warehouse)
    assert failed["event_id"].tolist() == [ids[3], ids[10]] and set(failed["event_type"]) == {"exam_failed"}
    two_types = api.unprocessed_events(["exam_failed", "exam_started"], limit=2, engine=warehouse)
    assert two_types["event_id"].tolist() == [ids[3], ids[7]]  # ids[0] (exam_started) is processed
    assert api.unprocessed_events("exam_failed,exam_started", engine=warehouse)["event_id"].tolist() == [
        ids[3],
        ids[7],
        ids[10],
    ]
    assert api.unprocessed_events(limit=0, engine=warehouse).empty


def test_mark_processed_counts_newly_marked_events(warehouse: Engine) -> None:
    ids = seed(warehouse, 6)
    assert api.mark_processed([ids[0], ids[1], 999_999], engine=warehouse) == 2
    assert api.mark_processed([ids[0]], engine=warehouse) == 0  # idempotent
    batch = api.unprocessed_events(limit=2, engine=warehouse)
    assert api.mark_processed(batch, engine=warehouse) == 2  # a frame with event_id works
    assert api.mark_processed([], engine=warehouse) == 0
    assert api.unprocessed_events(engine=warehouse)["event_id"].tolist() == ids[4:]


def test_student_history_is_newest_first_within_the_days(warehouse: Engine) -> None:
    seed(warehouse, 12, student_of=lambda i: 1 if i % 2 else 2, start=T0 - dt.timedelta(days=10))
    table = wh.lms_activity_events
    with warehouse.begin() as conn:  # spread student 1's events over days: event i at T0 - 10 days + i days
        for i in range(12):
            conn.execute(
                table.update()
                .where(table.c.event_key.like(f"exam:{i}:%"))
                .values(timestamp=T0 - dt.timedelta(days=10 - i))
            )
    history = api.student_history(1, days=3, as_of=T0, engine=warehouse)
    assert history["timestamp"].tolist() == [pd.Timestamp(T0 - dt.timedelta(days=d)) for d in (1, 3)]  # i = 9, 7
    assert set(history["student_id"]) == {1}
    assert len(api.student_history(1, as_of=T0 + dt.timedelta(days=2), engine=warehouse)) == 6  # all of them, 30 days
    assert api.student_history(1, engine=warehouse).empty  # May 2024 is more than 30 days before now
    recent = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    seed_one = {
        "event_key": "content:1:content_started",
        "event_type": "content_started",
        "student_id": 1,
        "timestamp": recent,
    }
    with warehouse.begin() as conn:
        conn.execute(table.insert(), [seed_one])
    assert api.student_history(1, engine=warehouse)["event_key"].tolist() == ["content:1:content_started"]


def test_claims_never_overlap_and_an_expired_lease_frees_the_events(warehouse: Engine) -> None:
    ids = seed(warehouse, 10)
    first = api.claim_unprocessed_events(3, worker="w1", engine=warehouse)
    second = api.claim_unprocessed_events(3, worker="w2", lease_seconds=60, engine=warehouse)
    assert first["event_id"].tolist() == ids[:3] and second["event_id"].tolist() == ids[3:6]
    assert first["ai_claimed_by"].str.startswith("w1/").all()
    assert (second["ai_claim_expires_at"] > pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=50)).all()
    assert api.mark_processed(first, engine=warehouse) == 3

    # w2 crashes: nothing happens to its events until its lease runs out ...
    assert api.claim_unprocessed_events(10, engine=warehouse)["event_id"].tolist() == ids[6:]
    assert api.claim_unprocessed_events(10, engine=warehouse).empty
    table = wh.lms_activity_events
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with warehouse.begin() as conn:
        conn.execute(table.update().where(table.c.event_id.in_(ids[3:6])).values(ai_claim_expires_at=past))
    # ... then another worker gets them; processed events never come back
    retry = api.claim_unprocessed_events(10, worker="w3", engine=warehouse)
    assert retry["event_id"].tolist() == ids[3:6]
    assert len(api.unprocessed_events(engine=warehouse)) == 7  # claimed or not, still unprocessed


def test_claims_filter_by_event_type(warehouse: Engine) -> None:
    ids = seed(warehouse, 14)
    claimed = api.claim_unprocessed_events(5, ["exam_passed"], engine=warehouse)
    assert claimed["event_id"].tolist() == [ids[2], ids[9]]


def test_concurrent_workers_never_share_an_event(warehouse: Engine) -> None:
    """Four threads claim small batches from one warehouse until it is drained.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite: claims queue on ``BEGIN IMMEDIATE``.
    """
    ids = seed(warehouse, 300)
    unprocessed = set(api.unprocessed_events(engine=warehouse)["event_id"])
    workers = 4
    start = threading.Barrier(workers)
    got: dict[int, list[int]] = {w: [] for w in range(workers)}
    errors: list[BaseException] = []

    def work(w: int) -> None:
        try:
            start.wait()
            while True:
                batch = api.claim_unprocessed_events(7, worker=f"w{w}", engine=warehouse)
                if batch.empty:
                    return
                got[w].extend(batch["event_id"].tolist())
                api.mark_processed(batch, engine=warehouse)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    claimed = [i for batch in got.values() for i in batch]
    assert len(claimed) == len(set(claimed)) == len(unprocessed) == len(ids)
    assert set(claimed) == unprocessed
    if warehouse.dialect.name == "postgresql":  # SQLite's single write lock may let one worker drain it all
        assert sum(1 for batch in got.values() if batch) >= 2, "the workers really ran side by side"
    assert api.unprocessed_events(engine=warehouse).empty


def test_a_claim_in_flight_is_skipped_on_postgres_and_waited_for_on_sqlite(warehouse: Engine) -> None:
    """Worker A's claim transaction is still open when worker B claims: B never gets A's events."""
    ids = seed(warehouse, 10)
    now, lease = dt.datetime.now(dt.UTC), dt.timedelta(minutes=5)
    other: dict[str, object] = {}

    def worker_b() -> None:
        other["ids"] = api.claim_unprocessed_events(5, worker="B", engine=warehouse)["event_id"].tolist()

    b = threading.Thread(target=worker_b)
    with db.write_transaction(warehouse) as conn:
        assert processing.claim(conn, 5, ALL_EVENT_TYPES, "A", now, lease) == ids[:5]
        b.start()
        b.join(timeout=3)
        if warehouse.dialect.name == "postgresql":
            assert not b.is_alive() and other["ids"] == ids[5:], "SKIP LOCKED: B neither waits nor takes A's rows"
        else:
            assert b.is_alive(), "BEGIN IMMEDIATE: B waits for the write lock"
    b.join(timeout=30)
    assert other["ids"] == ids[5:]


def test_without_an_engine_the_pipeline_configuration_is_used(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMS_WAREHOUSE_URL", backend.warehouse_url)
    monkeypatch.setenv("LMS_WAREHOUSE_SCHEMA", "ai_api")
    engine = open_warehouse(backend.warehouse_url, "ai_api")
    ids = seed(engine, 3)
    api._open.cache_clear()
    assert api.unprocessed_events()["event_id"].tolist() == ids
    assert api.mark_processed(ids[:1]) == 1
    assert api.claim_unprocessed_events(5)["event_id"].tolist() == ids[1:]
    bare = sa.create_engine(engine.url)  # an engine without schema translation gets LMS_WAREHOUSE_SCHEMA
    assert api.unprocessed_events(engine=bare)["event_id"].tolist() == ids[1:]
    engine.dispose()
    bare.dispose()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: api.unprocessed_events("exam_cheated"), "unknown event type.*exam_cheated.*known: exam_started"),
        (lambda: api.unprocessed_events(["exam_failed", "nope"]), "unknown event type.*nope"),
        (lambda: api.unprocessed_events(limit=-1), "limit must be >= 0, got -1"),
        (lambda: api.unprocessed_events(limit=2.5), "limit must be a whole number"),
        (lambda: api.unprocessed_events(limit=True), "limit must be a whole number"),
        (lambda: api.claim_unprocessed_events(-3), "limit must be >= 0"),
        (lambda: api.claim_unprocessed_events(5, lease_seconds=0), "lease_seconds must be a number > 0"),
        (lambda: api.mark_processed("12"), "event_ids must be a collection of integers"),
        (lambda: api.mark_processed([1, "2"]), "event_ids must be a whole number, got '2'"),
        (lambda: api.mark_processed(pd.DataFrame({"id": [1]})), "needs an event_id column"),
        (lambda: api.student_history("alice"), "student_id must be a whole number"),
        (lambda: api.student_history(1, days=-1), "days must be a number > 0"),
    ],
)
def test_bad_arguments_are_clear_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_unknown_event_types_in_a_non_list_are_type_errors() -> None:
    with pytest.raises(TypeError, match="event_types must be"):
        api.unprocessed_events(42)  # type: ignore[arg-type]


def test_the_api_imports_without_dagster() -> None:
    code = "import sys, lms_activity_pipeline.api; assert 'dagster' not in sys.modules, 'dagster imported'"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_a_warehouse_from_before_gains_the_new_columns_tables_and_index(backend: Backend) -> None:
    """The previous release's events table (no claim columns) is migrated additively on first use."""
    raw = translated(db.create_engine(backend.warehouse_url), "lms_activity")
    old = sa.MetaData(schema=wh.SCHEMA_TOKEN)
    events = wh.lms_activity_events
    sa.Table(events.name, old, *[like(c) for c in events.columns if not c.name.startswith("ai_claim")])
    with raw.begin() as conn:
        if backend.name == "postgresql":
            conn.execute(sa.text("CREATE SCHEMA lms_activity"))
        old.create_all(conn)
        conn.execute(
            events.insert().values(event_key="exam:1:exam_failed", event_type="exam_failed", student_id=1, timestamp=T0)
        )
    raw.dispose()

    engine = open_warehouse(backend.warehouse_url, "lms_activity")
    inspector = sa.inspect(engine)
    schema = "lms_activity" if backend.name == "postgresql" else None
    assert {"ai_claimed_by", "ai_claim_expires_at"} <= {
        c["name"] for c in inspector.get_columns(events.name, schema=schema)
    }
    assert "ix_lms_activity_events_student_time" in {
        i["name"] for i in inspector.get_indexes(events.name, schema=schema)
    }
    assert {"ai_ready_events", "student_daily_activity"} <= set(inspector.get_table_names(schema=schema))
    assert api.claim_unprocessed_events(5, engine=engine)["event_key"].tolist() == ["exam:1:exam_failed"]
    engine.dispose()
