"""Scale-out: ``lms_ingest_job`` on Dagster's Celery executor (dagster-celery) with a real broker and worker.

The end-to-end test needs Redis or RabbitMQ on 127.0.0.1 (skipped with the
reason otherwise): a ``dagster-celery worker start`` subprocess runs the steps
of a run launched with the real ``dagster job execute`` CLI, with the Dagster
instance, the LMS and the warehouse on PostgreSQL.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from lms_activity_pipeline import names
from lms_activity_pipeline.errors import ConfigError
from lms_activity_pipeline.settings import load_settings
from lms_activity_pipeline_tests.conftest import Backend, PgDatabases
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder, t
from lms_activity_pipeline_tests.support.pipeline import Pipeline, load_definitions
from lms_activity_pipeline_tests.support.processes import ROOT, stop_process_group, subprocess_env

PG_WAREHOUSE = "postgresql://postgres@127.0.0.1:5432/warehouse"

# name -> (port, broker URL, result backend URL)
BROKERS = {
    "redis": (6379, "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    "rabbitmq": (5672, "amqp://guest:guest@127.0.0.1:5672//", "rpc://"),
}


# --- configuration -------------------------------------------------------------------------------


def test_celery_with_a_sqlite_warehouse_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"LMS_EXECUTOR": "celery", "LMS_WAREHOUSE_URL": "sqlite:///wh.sqlite3"})
    message = str(excinfo.value)
    assert message.startswith("LMS_EXECUTOR=celery needs a PostgreSQL LMS_WAREHOUSE_URL")
    assert "\n" not in message
    with pytest.raises(ConfigError, match="LMS_EXECUTOR=celery needs a PostgreSQL"):
        load_settings({"LMS_EXECUTOR": "celery"})  # the default warehouse is SQLite too


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LMS_EXECUTOR": "dask"}, "LMS_EXECUTOR='dask' is not an executor (use multiprocess, in_process, celery)"),
        ({"LMS_CELERY_BROKER_URL": "localhost:6379"}, "LMS_CELERY_BROKER_URL is not a URL (e.g. redis://"),
        ({"LMS_CELERY_BACKEND_URL": "redis"}, "LMS_CELERY_BACKEND_URL is not a URL (e.g. redis://"),
        ({"LMS_CELERY_QUEUE": "my queue"}, "LMS_CELERY_QUEUE='my queue' must be letters"),
    ],
    ids=["executor", "broker", "backend", "queue"],
)
def test_bad_executor_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"LMS_WAREHOUSE_URL": PG_WAREHOUSE, **env})
    assert message in str(excinfo.value) and "\n" not in str(excinfo.value)


def executor_of(env: dict[str, str]) -> object:
    defs = load_definitions({"LMS_WAREHOUSE_URL": PG_WAREHOUSE, **env})
    return defs.resolve_job_def(names.INGEST_JOB).executor_def


def test_executor_is_selected_by_environment() -> None:
    assert executor_of({}).name == "multi_or_in_process_executor"  # Dagster's default, unchanged
    assert executor_of({"LMS_EXECUTOR": "multiprocess"}).name == "multi_or_in_process_executor"
    assert executor_of({"LMS_EXECUTOR": "in_process"}).name == "in_process"


def test_celery_executor_reads_broker_from_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dagster_celery", reason="dagster-celery is not installed (pip install -e '.[celery]')")
    executor = executor_of({"LMS_EXECUTOR": "celery", "LMS_CELERY_QUEUE": "lms"})
    assert executor.name == "celery"
    config = executor.config_schema.resolve_config({}).value["config"]  # what dagster-celery receives
    assert config["broker"] == "redis://127.0.0.1:6379/0" and config["backend"] == "redis://127.0.0.1:6379/0"
    assert config["config_source"] == {"task_default_queue": "lms"}

    monkeypatch.setenv("LMS_CELERY_BROKER_URL", "amqp://lms:secret@mq.internal//")
    executor = executor_of({"LMS_EXECUTOR": "celery"})
    assert executor.config_schema.resolve_config({}).value["config"]["broker"] == "amqp://lms:secret@mq.internal//"


# --- end to end ----------------------------------------------------------------------------------


def accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(params=list(BROKERS))
def broker(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(broker URL, backend URL) of a broker on 127.0.0.1 that accepts connections, else the test is skipped."""
    pytest.importorskip("dagster_celery", reason="dagster-celery is not installed (pip install -e '.[celery]')")
    port, broker_url, backend_url = BROKERS[request.param]
    if not accepts_tcp(port):
        pytest.skip(f"no Celery broker: {request.param} does not accept connections on 127.0.0.1:{port}")
    return broker_url, backend_url


@pytest.fixture
def celery_env(
    broker: tuple[str, str], pg_databases: PgDatabases, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """The environment of every process (CLI and worker): PostgreSQL instance, LMS and warehouse, a private queue."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    broker_url, backend_url = broker
    env = {
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_URL": pg_databases.create("dagster_storage"),
        "LMS_DATABASE_URL": pg_databases.create("lms_src"),
        "LMS_WAREHOUSE_URL": pg_databases.create("lms_wh"),
        "LMS_HOME": str(tmp_path / "lms_home"),
        "LMS_PARTITIONS_START": "2024-05-01",
        "LMS_EXECUTOR": "celery",
        "LMS_CELERY_BROKER_URL": broker_url,
        "LMS_CELERY_BACKEND_URL": backend_url,
        # A queue of our own: parallel test runs and other workers on the same broker never take our steps.
        "LMS_CELERY_QUEUE": f"lms_test_{uuid.uuid4().hex[:10]}",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # this process reads the run history back
    return env


@pytest.fixture
def celery_worker(celery_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """A real worker, started as README says, on the test's queue; its node name. Always stopped."""
    name = f"lms-test-{uuid.uuid4().hex[:6]}"
    log_path = tmp_path / "celery_worker.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dagster_celery.cli",
                "worker",
                "start",
                "-A",
                "dagster_celery.app",
                "-y",
                str(ROOT / "deploy" / "celery.yaml"),
                "-q",
                celery_env["LMS_CELERY_QUEUE"],
                "-n",
                name,
                "--",
                "--concurrency=2",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=tmp_path,
            env=subprocess_env(celery_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the `celery` child and pool processes stop with it
        )
    try:
        deadline = time.monotonic() + 90
        while " ready." not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Celery worker did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield f"{name}@{socket.gethostname()}"
    finally:
        stop_process_group(proc)
        delete_queue(celery_env)


def delete_queue(env: dict[str, str]) -> None:
    """Remove the test's queue from the broker (Redis keeps its bindings and RabbitMQ durable queues forever)."""
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app

    executor = CeleryExecutor.for_cli(broker=env["LMS_CELERY_BROKER_URL"], backend=env["LMS_CELERY_BACKEND_URL"])
    app = make_app(executor.app_args())
    queue = app.amqp.queues[env["LMS_CELERY_QUEUE"]]  # declared as the worker declared it
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=3)
        bound = queue(conn.default_channel)
        bound.declare()
        bound.delete()
        bound.exchange.delete()


def test_ingest_job_steps_run_on_a_celery_worker(
    celery_env: dict[str, str], celery_worker: str, tmp_path: Path
) -> None:
    backend = Backend("postgresql", celery_env["LMS_DATABASE_URL"], celery_env["LMS_WAREHOUSE_URL"])
    b = LMSBuilder(backend.lms_url).school()
    b.attempt(1, 1, 200, "graded", t(3, 10), submitted_at=t(3, 10, 30), graded_at=t(3, 11), score=42)
    b.content_attempt(1, 3, 300, "completed", t(3, 14), completed_at=t(3, 14, 10), progress_percent=100).write()

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "job",
            "execute",
            "-m",
            "lms_activity_pipeline.definitions",
            "-j",
            names.INGEST_JOB,
            "--tags",
            '{"dagster/partition": "2024-05-03"}',
        ],
        cwd=tmp_path,
        env=subprocess_env(celery_env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    worker_log = (tmp_path / "celery_worker.log").read_text()
    assert proc.returncode == 0, f"{proc.stderr[-3000:]}\n--- worker:\n{worker_log[-3000:]}"

    instance = DagsterInstance.get()  # DAGSTER_HOME: the run history is in PostgreSQL
    try:
        runs = instance.get_runs()
        assert [(r.job_name, r.status) for r in runs] == [(names.INGEST_JOB, DagsterRunStatus.SUCCESS)]
        assert runs[0].tags["dagster/partition"] == "2024-05-03"
        engine_events = instance.all_logs(runs[0].run_id, of_type=DagsterEventType.ENGINE_EVENT)
        in_worker = {
            e.step_key: e.dagster_event.engine_event_data.metadata["Celery worker"].value
            for e in engine_events
            if e.message.endswith(f"Executing steps {e.step_key} in celery worker")  # reported by the worker
        }
        step_keys = {e.step_key for e in instance.all_logs(runs[0].run_id, of_type=DagsterEventType.STEP_SUCCESS)}
        assert set(names.INGEST_ASSETS) <= step_keys  # plus the checks and feature tables
        assert in_worker == dict.fromkeys(step_keys, celery_worker)  # every step ran on the worker
        submitted = [e.message for e in engine_events if e.message.startswith("Submitting celery task")]
        assert len(submitted) == len(step_keys) and all(celery_env["LMS_CELERY_QUEUE"] in m for m in submitted)
    finally:
        instance.dispose()

    assert set(Pipeline(backend).event_ids()) == {
        "exam:1:exam_started",
        "exam:1:exam_completed",
        "exam:1:exam_passed",
        "content:1:content_started",
        "content:1:content_watched",
        "content:1:content_completed",
    }
