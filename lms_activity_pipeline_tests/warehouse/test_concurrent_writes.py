"""Steps writing the default SQLite warehouse at the same time, under Dagster's real multiprocess executor."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus

from lms_activity_pipeline import names
from lms_activity_pipeline.lms.demo import generate_demo_lms
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.store import Warehouse
from lms_activity_pipeline_tests.support.processes import materialize, subprocess_env

RUNS = 3
DAYS = 14


def test_parallel_raw_steps_wait_for_the_sqlite_write_lock(tmp_path: Path) -> None:
    """``raw_exam_attempts`` and ``raw_content_attempts`` run in two processes and write one SQLite file at
    once, a day at a time (``chunk_days: 1``: many write transactions each). Before, a transaction that read
    and then wrote failed at once with ``database is locked`` (every run of this test's size failed)."""
    lms_url = f"sqlite:///{tmp_path / 'lms.sqlite3'}"
    now = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    generate_demo_lms(lms_url, students=300, days=DAYS, now=now)
    with sa.create_engine(lms_url).connect() as conn:
        lms_rows = {
            t: conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar_one()
            for t in ("Attempts", "ContentAttempts")
        }
    first, last = (now - dt.timedelta(days=DAYS)).date().isoformat(), now.date().isoformat()
    config = {"ops": {name: {"config": {"chunk_days": 1}} for name in names.INGEST_ASSETS[:2]}}
    home = tmp_path / "dagster_home"
    home.mkdir()
    for run in range(RUNS):
        warehouse_url = f"sqlite:///{tmp_path / f'warehouse{run}.sqlite3'}"  # a first load each time: every row written
        env = subprocess_env(
            {
                "DAGSTER_HOME": str(home),
                "LMS_DATABASE_URL": lms_url,
                "LMS_WAREHOUSE_URL": warehouse_url,
                "LMS_PARTITIONS_START": first,
            }
        )
        materialize(
            env,
            list(names.INGEST_ASSETS[:2]),
            "--partition-range",
            f"{first}...{last}",
            "--config-json",
            json.dumps(config),
        )
        warehouse = Warehouse(warehouse_url)
        with warehouse.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            staged = {
                "Attempts": conn.execute(sa.select(sa.func.count()).select_from(wh.raw_exam_attempts)).scalar_one(),
                "ContentAttempts": conn.execute(
                    sa.select(sa.func.count()).select_from(wh.raw_content_attempts)
                ).scalar_one(),
            }
        assert staged == lms_rows
    runs = DagsterInstance.from_config(str(home)).get_runs()
    assert len(runs) == RUNS and all(r.status == DagsterRunStatus.SUCCESS for r in runs)
    assert all(r.run_config.get("execution") is None for r in runs)  # Dagster's default: a process per step
