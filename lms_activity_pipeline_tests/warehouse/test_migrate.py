"""Warehouse migrations are safe when several processes start at once."""

from __future__ import annotations

import datetime as dt
import threading

import sqlalchemy as sa

from lms_activity_pipeline.warehouse.engine import open_warehouse
from lms_activity_pipeline.warehouse.schema import METADATA
from lms_activity_pipeline_tests.conftest import Backend

WORKERS = 6


def test_concurrent_first_starts_all_migrate_cleanly(backend: Backend) -> None:
    """Parallel steps of one run each open the warehouse first: none may fail on 'table exists'."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(WORKERS)

    def start() -> None:
        try:
            barrier.wait()
            open_warehouse(backend.warehouse_url, "lms_activity").dispose()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    engine = open_warehouse(backend.warehouse_url, "lms_activity")
    schema = "lms_activity" if backend.name == "postgresql" else None
    assert set(sa.inspect(engine).get_table_names(schema=schema)) >= {t.name for t in METADATA.sorted_tables}


def test_an_up_to_date_warehouse_opens_with_read_only_access(pg_databases, monkeypatch) -> None:
    """An analyst's read-only account can use the API: opening the warehouse writes nothing when
    nothing is missing. An explicit engine depends on no setting but LMS_WAREHOUSE_SCHEMA."""
    import uuid

    from sqlalchemy.engine import make_url

    from lms_activity_pipeline import api, db

    url = pg_databases.create("lms_wh")
    open_warehouse(url, "lms_activity").dispose()
    role = f"analyst_{uuid.uuid4().hex[:8]}"
    admin = db.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(sa.text(f'GRANT USAGE ON SCHEMA lms_activity TO "{role}"'))
        conn.execute(sa.text(f'GRANT SELECT ON ALL TABLES IN SCHEMA lms_activity TO "{role}"'))
    reader = make_url(url).set(username=role, password=None).render_as_string(hide_password=False)
    try:
        monkeypatch.setenv("LMS_WAREHOUSE_URL", reader)
        assert api.unprocessed_events().empty
        monkeypatch.setenv("LMS_ACTIVITY_POLL_INTERVAL", "soon")  # broken, but none of the API's business
        explicit = db.create_engine(reader)
        assert api.student_history(1, engine=explicit).empty
        explicit.dispose()
        api._open.cache_clear()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            conn.execute(sa.text(f'DROP ROLE "{role}"'))
        admin.dispose()


def test_columns_added_later_carry_their_comments(pg_url: str) -> None:
    from lms_activity_pipeline import db

    engine = db.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE SCHEMA lms_activity"))
        conn.execute(
            sa.text("CREATE TABLE lms_activity.zulip_user_cache (site text, email text, PRIMARY KEY (site, email))")
        )
    open_warehouse(pg_url, "lms_activity").dispose()
    with engine.connect() as conn:
        comment = conn.execute(
            sa.text("SELECT col_description('lms_activity.zulip_user_cache'::regclass, 3)")  # third column: found
        ).scalar()
    engine.dispose()
    from lms_activity_pipeline.warehouse.schema import zulip_user_cache

    assert comment == zulip_user_cache.c.found.comment and comment


def test_classification_marks_added_to_a_warehouse_with_staged_rows_take_them_as_classified(backend: Backend) -> None:
    """A warehouse from before ``_classified_version`` gets the column filled from ``updated_at``: its staged
    rows were classified then, and ``--stats`` must not report months of lag after the upgrade."""
    from lms_activity_pipeline.warehouse import schema as wh
    from lms_activity_pipeline.warehouse.freshness import reached_events

    engine = open_warehouse(backend.warehouse_url, "lms_activity")
    table = wh.raw_exam_attempts
    at = dt.datetime(2024, 5, 3, 10, tzinfo=dt.UTC)
    row = {
        "id": 1,
        "user_id": 1,
        "exam_id": 200,
        "status": "in_progress",
        "started_at": at,
        "updated_at": at,
        "_extracted_at": at,
    }
    prefix = "lms_activity." if backend.name == "postgresql" else ""
    with engine.begin() as conn:
        conn.execute(table.insert().values(**row))
        conn.execute(sa.text(f"DROP INDEX {prefix}ix_raw_exam_attempts_not_in_events"))
        for column in ("_rejected_reason", "_classified_version"):
            conn.execute(sa.text(f"ALTER TABLE {prefix}raw_exam_attempts DROP COLUMN {column}"))
    engine.dispose()
    engine = open_warehouse(backend.warehouse_url, "lms_activity")
    with engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(table).where(reached_events(table))).scalar_one() == 1
        )
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(table).where(wh.not_in_events(table))).scalar_one() == 0
        )
    engine.dispose()
