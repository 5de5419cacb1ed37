"""The production instance configuration (deploy/dagster.yaml) on real PostgreSQL storage, and its daemon."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster._core.instance.config import PoolGranularity
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.dagster_run import RunRecord
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from sqlalchemy.engine import make_url

from lms_activity_pipeline import names
from lms_activity_pipeline.db import normalise_url
from lms_activity_pipeline_tests.conftest import Backend, PgDatabases
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder, t
from lms_activity_pipeline_tests.support.notify_helpers import recent_days, recent_school
from lms_activity_pipeline_tests.support.pipeline import Pipeline
from lms_activity_pipeline_tests.support.processes import (
    ROOT,
    free_port,
    start_dagster_daemon,
    stop_process_group,
    subprocess_env,
)


@pytest.fixture
def production_home(pg_databases: PgDatabases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_POSTGRES_URL", pg_databases.create("dagster_storage"))
    return home


def test_production_instance_stores_runs_and_assets_in_postgres(
    production_home: Path, pg_databases: PgDatabases
) -> None:
    instance = DagsterInstance.from_config(str(production_home))
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    queue = instance.get_concurrency_config().run_queue_config  # what the daemon's dequeue loop reads
    assert {(limit["key"], limit["limit"]) for limit in queue.tag_concurrency_limits} == {("lms/notify", 1)}
    assert queue.max_concurrent_runs == 8
    assert instance.run_coordinator.dequeue_interval_seconds == 1
    assert instance.run_monitoring_enabled
    assert_serialises_and_retries_ingest_runs(instance)

    backend = Backend("postgresql", pg_databases.create("lms_src"), pg_databases.create("lms_wh"))
    b = LMSBuilder(backend.lms_url).school()
    b.attempt(1, 1, 200, "graded", t(3, 23, 50), submitted_at=t(4, 0, 20), graded_at=t(4, 9), score=20).write()
    pipe = Pipeline(backend, instance=instance)
    run = pipe.ingest("2024-05-03", "2024-05-04")
    instance.dispose()

    # A fresh process (here: a fresh instance object) reads the history back from PostgreSQL.
    again = DagsterInstance.from_config(str(production_home))
    runs = again.get_runs()
    assert [(r.run_id, r.job_name, r.status) for r in runs] == [
        (run.run_id, "lms_ingest_job", DagsterRunStatus.SUCCESS)
    ]
    assert runs[0].run_op_concurrency.all_pools == {names.INGEST_POOL}  # what the queue holds the run on
    records = again.fetch_materializations(AssetKey("lms_activity_events"), limit=10).records
    assert sorted(r.partition_key for r in records) == ["2024-05-03", "2024-05-04"]
    assert set(pipe.event_ids()) == {"exam:1:exam_started", "exam:1:exam_completed", "exam:1:exam_failed"}
    again.dispose()


def assert_serialises_and_retries_ingest_runs(instance: DagsterInstance) -> None:
    """The instance holds a queued run that uses the ingest pool while another one is in progress, and retries failed runs."""
    pools = instance.get_concurrency_config().pool_config
    assert pools.pool_granularity == PoolGranularity.RUN and pools.default_pool_limit == 1
    assert instance.event_log_storage.supports_global_concurrency_limits
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 1


def test_local_instance_serialises_and_retries_ingest_runs(tmp_path: Path) -> None:
    """The repository's dagster.yaml (what `lms-activity monitor` and `dagster dev` use) on its SQLite storage."""
    shutil.copyfile(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = DagsterInstance.from_config(str(tmp_path))
    assert_serialises_and_retries_ingest_runs(instance)
    instance.dispose()


def test_ingest_and_notify_runs_through_the_production_instance(
    production_home: Path, pg_databases: PgDatabases
) -> None:
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
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
    admin.dispose()


def wait_for_runs(
    instance: DagsterInstance,
    tags: dict[str, str],
    statuses: set[DagsterRunStatus],
    daemon_log: Path,
    count: int = 1,
    timeout: float = 120,
    run_ids: list[str] | None = None,
) -> list[DagsterRun]:
    """The first ``count`` runs with ``tags`` (and ``run_ids``) that reach one of ``statuses``; fails with the daemon's log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(RunsFilter(tags=tags, statuses=list(statuses), run_ids=run_ids))
        if len(runs) >= count:
            return runs[-count:]
        time.sleep(0.3)
    seen = [(r.job_name, r.status.value, dict(r.tags)) for r in instance.get_runs()]
    pytest.fail(
        f"not {count} runs with {tags} in {statuses} after {timeout} s; runs: {seen}\n{daemon_log.read_text()[-4000:]}"
    )


def ingest_run_records(instance: DagsterInstance) -> list[RunRecord]:
    """Every run that holds the ingest pool: lms_ingest_job and Dagster's implicit asset job (UI runs, backfills)."""
    records = [r for r in instance.get_run_records() if r.dagster_run.run_op_concurrency]
    assert {r.dagster_run.job_name for r in records} <= {names.INGEST_JOB, ASSET_JOB}
    assert all(r.dagster_run.run_op_concurrency.all_pools == {names.INGEST_POOL} for r in records)
    return records


def assert_never_overlap(records: list[RunRecord]) -> None:
    """The runs ran one after another: each started after the previous one ended."""
    spans = sorted((r.start_time, r.end_time, r.dagster_run.job_name) for r in records)
    assert all(start is not None and end is not None for start, end, _ in spans), spans
    assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(spans)), spans


def launch(env: dict[str, str], partition: str) -> subprocess.Popen:
    """``dagster job launch`` of one ingest partition, as an operator types it: the run goes into the queue."""
    return subprocess.Popen(
        [
            "dagster",
            "job",
            "launch",
            "-w",
            str(ROOT / "workspace.yaml"),
            "-j",
            "lms_ingest_job",
            "--tags",
            json.dumps({"dagster/partition": partition, "lms/trigger": "manual"}),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_daemon_runs_the_sensor_retries_a_transient_failure_and_never_overlaps_ingest_runs(
    production_home: Path, pg_databases: PgDatabases, pg_server_url: str, tmp_path: Path
) -> None:
    """The production processes for real: ``dagster-daemon run`` on deploy/dagster.yaml and PostgreSQL storage.

    While the warehouse refuses connections the sensor's ticks fail and request nothing (its cursor is in
    the warehouse: nothing moves, nothing is lost); once it is back the sensor requests the history run.
    That run fails because the LMS refuses connections the moment it is queued; Dagster retries it from the
    failure once the LMS is back, then notify_mentors_after_ingest sends (dry-run) the notifications. Two
    more ingest runs of the same day launched at once wait for each other in the queue.
    """
    backend = Backend("postgresql", pg_databases.create("lms_src"), pg_databases.create("lms_wh"))
    recent_school(backend.lms_url)
    first_day, today = recent_days()
    env = subprocess_env(
        {
            "DAGSTER_HOME": str(production_home),
            "DAGSTER_POSTGRES_URL": os.environ["DAGSTER_POSTGRES_URL"],
            "LMS_DATABASE_URL": backend.lms_url,
            "LMS_WAREHOUSE_URL": backend.warehouse_url,
            "LMS_HOME": str(tmp_path / "lms_home"),
            "LMS_PARTITIONS_START": first_day,
            "LMS_ACTIVITY_POLL_INTERVAL": "5",
            "LMS_EXECUTOR": "in_process",  # seconds per run instead of a process per step: the queue is under test
        }
    )
    set_connections(pg_server_url, backend.warehouse_url, allowed=False)
    daemon_log = tmp_path / "daemon.log"
    daemon = start_dagster_daemon(env, daemon_log)
    instance = DagsterInstance.from_config(str(production_home))
    try:
        sensor_run = {"lms/trigger": "sensor"}
        time.sleep(12)  # two ticks against a warehouse that refuses connections
        assert not instance.get_runs(RunsFilter(tags=sensor_run)), "a tick requested a run without its cursor"
        assert "Sensor tick caught an error" in daemon_log.read_text()
        set_connections(pg_server_url, backend.warehouse_url, allowed=True)
        wait_for_runs(instance, sensor_run, set(DagsterRunStatus), daemon_log)  # requested: queued or later
        set_connections(pg_server_url, backend.lms_url, allowed=False)
        [failed] = wait_for_runs(instance, sensor_run, {DagsterRunStatus.FAILURE}, daemon_log)
        set_connections(pg_server_url, backend.lms_url, allowed=True)
        [retry] = wait_for_runs(
            instance, {"dagster/parent_run_id": failed.run_id}, {DagsterRunStatus.SUCCESS}, daemon_log
        )
        # Dagster tags the failed run a moment after marking it failed: read it back once the retry exists.
        assert instance.get_run_by_id(failed.run_id).tags["dagster/will_retry"] == "true"
        assert (
            retry.tags["dagster/retry_number"] == "1"
            and retry.tags["dagster/run_key"] == failed.tags["dagster/run_key"]
        )
        [notify] = wait_for_runs(instance, {"lms/ingest_run_id": retry.run_id}, {DagsterRunStatus.SUCCESS}, daemon_log)
        assert notify.job_name == "notify_mentors_job"
        log_rows = Pipeline(backend).log_rows()
        assert len(log_rows) == 12 and set(log_rows["status"]) == {"dry_run"}

        launches = [launch(env, today), launch(env, today)]  # at once: both queued together
        for proc in launches:
            output, _ = proc.communicate(timeout=180)
            assert proc.returncode == 0, output[-3000:]
        wait_for_runs(instance, {"lms/trigger": "manual"}, {DagsterRunStatus.SUCCESS}, daemon_log, count=2)

        records = ingest_run_records(instance)
        assert len(records) == 4  # the failed sensor run, its retry and the two manual runs
        assert_never_overlap(records)
    finally:
        stop_process_group(daemon)
        set_connections(pg_server_url, backend.warehouse_url, allowed=True)
        set_connections(pg_server_url, backend.lms_url, allowed=True)
        instance.dispose()
    assert len(Pipeline(backend).log_rows()) == 12  # the manual runs re-stored the same events: nothing new to send


# --- runs launched from the UI: Dagster's implicit asset job -----------------------------------------

ASSET_JOB = "__ASSET_JOB"  # what the UI runs for a materialisation or a backfill of assets
CODE_LOCATION = "lms_activity_pipeline"  # workspace.yaml
POOL_ASSETS = [
    "raw_exam_attempts",
    "raw_content_attempts",
    "lms_activity_events",
    "ai_ready_events",
    "student_daily_activity",
]

LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""
LOCATION_STATUS = """
query { workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus } } } }
"""


class DagsterUI:
    """The GraphQL calls the Dagster UI makes from an asset's page, against a real ``dagster-webserver``."""

    def __init__(self, port: int) -> None:
        self.client = DagsterGraphQLClient("127.0.0.1", port_number=port)

    def wait_until_loaded(self, log: Path, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                workspace = self.client._execute(LOCATION_STATUS)["workspaceOrError"]
                if any(e["loadStatus"] == "LOADED" for e in workspace.get("locationEntries", [])):
                    return
            except DagsterGraphQLClientError:
                pass  # the webserver is still starting
            time.sleep(0.5)
        pytest.fail(f"dagster-webserver did not load {CODE_LOCATION} in {timeout} s\n{log.read_text()[-3000:]}")

    def materialise(self, partition: str) -> str:
        """*Materialize* on the assets for one partition: a run of the implicit asset job, into the queue."""
        return self.client.submit_job_execution(
            ASSET_JOB,
            repository_location_name=CODE_LOCATION,
            repository_name="__repository__",
            asset_selection=POOL_ASSETS,
            tags={"dagster/partition": partition},
        )

    def backfill(self, partitions: list[str]) -> str:
        """A backfill of the assets over ``partitions`` from the *Partitions* tab (one run: single-run policy)."""
        params: dict[str, Any] = {
            "assetSelection": [{"path": [name]} for name in POOL_ASSETS],
            "partitionNames": partitions,
            "fromFailure": False,
        }
        result = self.client._execute(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        return result["backfillId"]


def days(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]


@pytest.fixture(params=["deploy/dagster.yaml", "dagster.yaml"], ids=["production", "local"])
def any_instance_home(
    request: pytest.FixtureRequest, pg_databases: PgDatabases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A DAGSTER_HOME with the production instance (PostgreSQL storage) or the local one (SQLite storage)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / request.param, home / "dagster.yaml")
    if request.param.startswith("deploy"):
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", pg_databases.create("dagster_storage"))
    return home


@pytest.mark.filterwarnings("ignore:Using variable_values:DeprecationWarning")  # inside dagster-graphql's client
def test_ui_materialisations_and_backfills_queue_on_the_ingest_pool_and_are_retried(
    any_instance_home: Path, pg_databases: PgDatabases, pg_server_url: str, tmp_path: Path
) -> None:
    """UI runs of the assets (Dagster's ``__ASSET_JOB``, no tags of ours) through ``dagster-webserver`` and ``dagster-daemon``.

    On an instance just deployed (the pool's limit set as README's Deployment says), two backfills of the
    same days and a materialisation launched together run one after another; a materialisation that
    fails while the warehouse refuses connections is retried by Dagster from the failure.
    """
    backend = Backend("postgresql", pg_databases.create("lms_src"), pg_databases.create("lms_wh"))
    recent_school(backend.lms_url)
    first_day, today = recent_days()
    env = subprocess_env(
        {
            "DAGSTER_HOME": str(any_instance_home),
            **(
                {"DAGSTER_POSTGRES_URL": os.environ["DAGSTER_POSTGRES_URL"]}
                if "DAGSTER_POSTGRES_URL" in os.environ
                else {}
            ),
            "LMS_DATABASE_URL": backend.lms_url,
            "LMS_WAREHOUSE_URL": backend.warehouse_url,
            "LMS_HOME": str(tmp_path / "lms_home"),
            "LMS_PARTITIONS_START": first_day,
            "LMS_ACTIVITY_MONITOR_ENABLED": "false",  # only the UI launches ingest runs here
            "LMS_EXECUTOR": "in_process",
        }
    )
    # Without it Dagster creates the limit from `default_limit` when it first sees a queued run in the pool,
    # and the runs it dequeues in that same pass are not held yet.
    subprocess.run(
        ["dagster", "instance", "concurrency", "set", names.INGEST_POOL, "1"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    port, log_path = free_port(), tmp_path / "dagster.log"
    workspace = str(ROOT / "workspace.yaml")
    with log_path.open("w") as log:
        processes = [
            subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            for command in (
                ["dagster-daemon", "run", "-w", workspace],
                ["dagster-webserver", "-h", "127.0.0.1", "-p", str(port), "-w", workspace],
            )
        ]
    instance = DagsterInstance.from_config(str(any_instance_home))
    try:
        ui = DagsterUI(port)
        ui.wait_until_loaded(log_path)
        backfills = [ui.backfill(days(first_day, today)), ui.backfill(days(first_day, today))]
        for backfill_id in backfills:  # both backfill runs are in the queue: launch a materialisation among them
            wait_for_runs(instance, {"dagster/backfill": backfill_id}, set(DagsterRunStatus), log_path)
        materialised = ui.materialise(today)
        for backfill_id in backfills:
            wait_for_runs(instance, {"dagster/backfill": backfill_id}, {DagsterRunStatus.SUCCESS}, log_path)
        wait_for_runs(instance, {}, {DagsterRunStatus.SUCCESS}, log_path, run_ids=[materialised])
        assert_never_overlap(ingest_run_records(instance))

        set_connections(pg_server_url, backend.warehouse_url, allowed=False)
        failed_id = ui.materialise(today)
        [failed] = wait_for_runs(instance, {}, {DagsterRunStatus.FAILURE}, log_path, run_ids=[failed_id])
        assert failed.job_name == ASSET_JOB
        set_connections(pg_server_url, backend.warehouse_url, allowed=True)
        [retry] = wait_for_runs(instance, {"dagster/parent_run_id": failed_id}, {DagsterRunStatus.SUCCESS}, log_path)
        assert retry.job_name == ASSET_JOB and retry.tags["dagster/retry_number"] == "1"

        records = ingest_run_records(instance)
        assert len(records) == 5  # two backfill runs, a materialisation, the failed one and its retry
        assert_never_overlap(records)
    finally:
        for proc in processes:
            stop_process_group(proc)
        set_connections(pg_server_url, backend.warehouse_url, allowed=True)
        instance.dispose()
    assert len(Pipeline(backend).event_ids()) == 9  # recent_school's events, stored once whoever ran


# --- operational alerts (issue 15): the run failure sensor in the real daemon ----------------------------


def wait_for_sensor_tick(instance: DagsterInstance, name: str, daemon_log: Path, timeout: float = 120) -> None:
    """Until the daemon has ticked sensor ``name`` once: a run status sensor only sees runs that end after that."""
    from dagster._core.scheduler.instigation import InstigatorType

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.instigator_name == name and instance.get_ticks(state.instigator_origin_id, state.selector_id):
                return
        time.sleep(0.5)
    pytest.fail(f"sensor {name} never ticked in {timeout} s\n{daemon_log.read_text()[-4000:]}")


def test_daemon_alerts_once_on_a_run_that_failed_for_good(
    production_home: Path, pg_databases: PgDatabases, pg_server_url: str, tmp_path: Path, fake_zulip: Any
) -> None:
    """``dagster-daemon run`` with the production instance (one run retry): an ingest run fails because the
    LMS refuses connections, Dagster retries it, the retry fails too; lms_run_failure_alerts posts one
    alert to the Zulip channel, for the retry that failed for good, not for the first failure."""
    fake_zulip.add_channel("ops")
    backend = Backend("postgresql", pg_databases.create("lms_src"), pg_databases.create("lms_wh"))
    recent_school(backend.lms_url)
    first_day, today = recent_days()
    env = subprocess_env(
        {
            "DAGSTER_HOME": str(production_home),
            "DAGSTER_POSTGRES_URL": os.environ["DAGSTER_POSTGRES_URL"],
            "LMS_DATABASE_URL": backend.lms_url,
            "LMS_WAREHOUSE_URL": backend.warehouse_url,
            "LMS_HOME": str(tmp_path / "lms_home"),
            "LMS_PARTITIONS_START": first_day,
            "LMS_ACTIVITY_MONITOR_ENABLED": "false",  # only the launched run
            "LMS_EXECUTOR": "in_process",
            "ZULIP_SITE": fake_zulip.url,
            "ZULIP_EMAIL": fake_zulip.email,
            "ZULIP_API_KEY": fake_zulip.api_key,
            "LMS_ALERT_ZULIP_STREAM": "ops",
            "LMS_DAGSTER_UI_URL": "http://dagster.example:3000",
        }
    )
    daemon_log = tmp_path / "daemon.log"
    daemon = start_dagster_daemon(env, daemon_log)
    instance = DagsterInstance.from_config(str(production_home))
    try:
        wait_for_sensor_tick(instance, names.RUN_FAILURE_ALERTS_SENSOR, daemon_log)
        set_connections(pg_server_url, backend.lms_url, allowed=False)
        proc = launch(env, today)
        output, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, output[-3000:]
        [first] = wait_for_runs(instance, {"lms/trigger": "manual"}, {DagsterRunStatus.FAILURE}, daemon_log)
        [retry] = wait_for_runs(
            instance, {"dagster/parent_run_id": first.run_id}, {DagsterRunStatus.FAILURE}, daemon_log
        )
        deadline = time.monotonic() + 120
        while not fake_zulip.channel_messages("ops") and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(15)  # more sensor ticks: still one alert
        [alert] = fake_zulip.channel_messages("ops", "lms-activity alerts")
        assert f"**lms_ingest_job failed for good ({today})**" in alert.content
        assert f"http://dagster.example:3000/runs/{retry.run_id}" in alert.content
        assert instance.get_run_by_id(first.run_id).tags["dagster/will_retry"] == "true"
    finally:
        stop_process_group(daemon)
        set_connections(pg_server_url, backend.lms_url, allowed=True)
        instance.dispose()
