"""The production instance configuration (deploy/dagster.yaml) on real PostgreSQL storage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from lms_activity_pipeline_tests.conftest import Backend, PgDatabases
from lms_activity_pipeline_tests.lms_builder import LMSBuilder, t
from lms_activity_pipeline_tests.notify_helpers import recent_days, recent_school
from lms_activity_pipeline_tests.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def production_home(pg_databases: PgDatabases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", pg_databases.create("dagster_storage"))
    return home


def test_production_instance_stores_runs_and_assets_in_postgres(production_home: Path, pg_databases: PgDatabases) -> None:
    instance = DagsterInstance.from_config(str(production_home))
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    coordinator = instance.run_coordinator
    assert isinstance(coordinator, QueuedRunCoordinator)
    limits = {(limit["key"], limit["limit"]) for limit in coordinator.get_run_queue_config().tag_concurrency_limits}
    assert ("lms/ingest", 1) in limits
    assert instance.run_retries_enabled and instance.run_monitoring_enabled

    backend = Backend("postgresql", pg_databases.create("lms_src"), pg_databases.create("lms_wh"))
    b = LMSBuilder(backend.lms_url).school()
    b.attempt(1, 1, 200, "graded", t(3, 23, 50), submitted_at=t(4, 0, 20), graded_at=t(4, 9), score=20).write()
    pipe = Pipeline(backend, instance=instance)
    run = pipe.ingest("2024-05-03", "2024-05-04")
    instance.dispose()

    # A fresh process (here: a fresh instance object) reads the history back from PostgreSQL.
    again = DagsterInstance.from_config(str(production_home))
    runs = again.get_runs()
    assert [(r.run_id, r.job_name, r.status) for r in runs] == [(run.run_id, "lms_ingest_job", DagsterRunStatus.SUCCESS)]
    assert runs[0].tags["lms/ingest"] == "true"
    records = again.fetch_materializations(AssetKey("lms_activity_events"), limit=10).records
    assert sorted(r.partition_key for r in records) == ["2024-05-03", "2024-05-04"]
    assert set(pipe.event_ids()) == {"exam:1:exam_started", "exam:1:exam_completed", "exam:1:exam_failed"}
    again.dispose()


def test_ingest_and_notify_runs_through_the_production_instance(production_home: Path, pg_databases: PgDatabases) -> None:
    instance = DagsterInstance.from_config(str(production_home))
    backend = Backend("postgresql", pg_databases.create("lms_src"), pg_databases.create("lms_wh"))
    recent_school(backend.lms_url)
    pipe = Pipeline(backend, instance=instance)
    ingest = pipe.ingest(*recent_days())
    notify = pipe.notify()  # no Zulip configured: dry-run
    instance.dispose()

    again = DagsterInstance.from_config(str(production_home))
    history = {r.run_id: (r.job_name, r.status) for r in again.get_runs()}
    assert history == {
        ingest.run_id: ("lms_ingest_job", DagsterRunStatus.SUCCESS),
        notify.run_id: ("notify_mentors_job", DagsterRunStatus.SUCCESS),
    }
    assert again.get_run_by_id(notify.run_id).tags["lms/notify"] == "true"
    assert set(pipe.log_rows()["status"]) == {"dry_run"}
    again.dispose()
