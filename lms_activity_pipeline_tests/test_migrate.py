"""Warehouse migrations are safe when several processes start at once."""

from __future__ import annotations

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
