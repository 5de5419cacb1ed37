"""The production instance configuration (deploy/dagster.yaml) on real PostgreSQL storage, and its daemon."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from sqlalchemy.engine import make_url

from lms_activity_pipeline.db import normalise_url
from lms_activity_pipeline_tests.conftest import Backend, PgDatabases
from lms_activity_pipeline_tests.lms_builder import LMSBuilder, t
from lms_activity_pipeline_tests.notify_helpers import recent_days, recent_school
from lms_activity_pipeline_tests.pipeline import Pipeline
from lms_activity_pipeline_tests.processes import ROOT, stop_process_group, subprocess_env


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
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    queue = instance.get_concurrency_config().run_queue_config  # what the daemon's dequeue loop reads
    assert {(limit["key"], limit["limit"]) for limit in queue.tag_concurrency_limits} == {("lms/ingest", 1), ("lms/notify", 1)}
    assert queue.max_concurrent_runs == 8
    assert instance.run_coordinator.dequeue_interval_seconds == 2
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


# --- the daemon: sensor, queue limits, retries ------------------------------------------------------


def set_connections(server_url: str, database_url: str, *, allowed: bool) -> None:
    """Let (or stop) anyone connect to a database: a transient outage of the warehouse, as in a failover."""
    name = make_url(database_url).database
    admin = sa.create_engine(normalise_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
        if not allowed:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
    admin.dispose()


def wait_for_runs(instance: DagsterInstance, tags: dict[str, str], statuses: set[DagsterRunStatus], daemon_log: Path,
                  count: int = 1, timeout: float = 120) -> list[DagsterRun]:
    """The first ``count`` runs with ``tags`` that reach one of ``statuses``; fails with the daemon's log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(RunsFilter(tags=tags, statuses=list(statuses)))
        if len(runs) >= count:
            return runs[-count:]
        time.sleep(0.3)
    seen = [(r.job_name, r.status.value, dict(r.tags)) for r in instance.get_runs()]
    pytest.fail(f"not {count} runs with {tags} in {statuses} after {timeout} s; runs: {seen}\n{daemon_log.read_text()[-4000:]}")


def launch(env: dict[str, str], partition: str) -> subprocess.Popen:
    """``dagster job launch`` of one ingest partition, as an operator types it: the run goes into the queue."""
    return subprocess.Popen(
        [
            "dagster", "job", "launch", "-w", str(ROOT / "workspace.yaml"), "-j", "lms_ingest_job",
            "--tags", json.dumps({"dagster/partition": partition, "lms/trigger": "manual"}),
        ],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def test_daemon_runs_the_sensor_retries_a_transient_failure_and_never_overlaps_ingest_runs(
    production_home: Path, pg_databases: PgDatabases, pg_server_url: str, tmp_path: Path
) -> None:
    """The production processes for real: ``dagster-daemon run`` on deploy/dagster.yaml and PostgreSQL storage.

    The sensor's first run fails because the warehouse refuses connections; Dagster retries it from
    the failure once the warehouse is back, then notify_mentors_after_ingest sends (dry-run) the
    notifications. Two more ingest runs of the same day launched at once wait for each other in the queue.
    """
    backend = Backend("postgresql", pg_databases.create("lms_src"), pg_databases.create("lms_wh"))
    recent_school(backend.lms_url)
    first_day, today = recent_days()
    env = subprocess_env({
        "DAGSTER_HOME": str(production_home),
        "DAGSTER_POSTGRES_URL": os.environ["DAGSTER_POSTGRES_URL"],
        "LMS_DATABASE_URL": backend.lms_url,
        "LMS_WAREHOUSE_URL": backend.warehouse_url,
        "LMS_HOME": str(tmp_path / "lms_home"),
        "LMS_PARTITIONS_START": first_day,
        "LMS_ACTIVITY_POLL_INTERVAL": "5",
        "LMS_EXECUTOR": "in_process",  # seconds per run instead of a process per step: the queue is under test
    })
    set_connections(pg_server_url, backend.warehouse_url, allowed=False)
    daemon_log = tmp_path / "daemon.log"
    with daemon_log.open("w") as log:
        daemon = subprocess.Popen(
            ["dagster-daemon", "run", "-w", str(ROOT / "workspace.yaml")],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    instance = DagsterInstance.from_config(str(production_home))
    try:
        sensor_run = {"lms/trigger": "sensor"}
        [failed] = wait_for_runs(instance, sensor_run, {DagsterRunStatus.FAILURE}, daemon_log)
        set_connections(pg_server_url, backend.warehouse_url, allowed=True)
        [retry] = wait_for_runs(instance, {"dagster/parent_run_id": failed.run_id}, {DagsterRunStatus.SUCCESS}, daemon_log)
        # Dagster tags the failed run a moment after marking it failed: read it back once the retry exists.
        assert instance.get_run_by_id(failed.run_id).tags["dagster/will_retry"] == "true"
        assert retry.tags["dagster/retry_number"] == "1" and retry.tags["dagster/run_key"] == failed.tags["dagster/run_key"]
        [notify] = wait_for_runs(instance, {"lms/ingest_run_id": retry.run_id}, {DagsterRunStatus.SUCCESS}, daemon_log)
        assert notify.job_name == "notify_mentors_job"
        log_rows = Pipeline(backend).log_rows()
        assert len(log_rows) == 12 and set(log_rows["status"]) == {"dry_run"}

        launches = [launch(env, today), launch(env, today)]  # at once: both queued together
        for proc in launches:
            output, _ = proc.communicate(timeout=180)
            assert proc.returncode == 0, output[-3000:]
        wait_for_runs(instance, {"lms/trigger": "manual"}, {DagsterRunStatus.SUCCESS}, daemon_log, count=2)

        records = instance.get_run_records(RunsFilter(tags={"lms/ingest": "true"}))
        assert len(records) == 4  # the failed sensor run, its retry and the two manual runs
        spans = sorted((r.start_time, r.end_time) for r in records)
        assert all(end is not None for _, end in spans)
        assert all(prev_end <= start for (_, prev_end), (start, _) in zip(spans, spans[1:])), spans
    finally:
        stop_process_group(daemon)
        set_connections(pg_server_url, backend.warehouse_url, allowed=True)
        instance.dispose()
    assert len(Pipeline(backend).log_rows()) == 12  # the manual runs re-stored the same events: nothing new to send
