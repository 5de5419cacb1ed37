"""The alert sensors evaluated on real runs, posting through the real ``zulip`` client to the loopback Zulip."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from dagster import (
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    ExecuteInProcessResult,
    SkipReason,
    build_run_status_sensor_context,
    build_sensor_context,
)
from dagster._core.definitions.freshness import TimeWindowFreshnessPolicy

from lms_activity_pipeline import names
from lms_activity_pipeline.defs.resources import AlertsResource
from lms_activity_pipeline.defs.runs import run_ingest
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder, t
from lms_activity_pipeline_tests.support.notify_helpers import fast_zulip
from lms_activity_pipeline_tests.support.pipeline import Pipeline, checks, metadata

CHANNEL = "ops"
UI = "http://dagster.example:3000"


def sqlite_backend(tmp_path: Path) -> Backend:
    return Backend("sqlite", f"sqlite:///{tmp_path / 'lms.sqlite3'}", f"sqlite:///{tmp_path / 'warehouse.sqlite3'}")


def pipeline(backend: Backend, server: FakeZulip, retries: int) -> Pipeline:
    instance = DagsterInstance.ephemeral(settings={"run_retries": {"enabled": retries > 0, "max_retries": retries}})
    alerts = AlertsResource(stream=CHANNEL, ui_url=UI)
    return Pipeline(backend, instance=instance, resources={"zulip": fast_zulip(server), "alerts": alerts})


def failed_ingest(pipe: Pipeline) -> ExecuteInProcessResult:
    result = run_ingest(pipe.defs, pipe.instance, "2024-05-03", "2024-05-04", raise_on_error=False)
    assert not result.success
    return result


def evaluate_failure_sensor(pipe: Pipeline, result: ExecuteInProcessResult) -> str:
    sensor = pipe.defs.resolve_sensor_def(names.RUN_FAILURE_ALERTS_SENSOR)
    run = pipe.instance.get_run_by_id(result.run_id)  # with the tags the instance added (dagster/will_retry)
    assert run is not None and run.status == DagsterRunStatus.FAILURE
    with build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=result.get_run_failure_event(),
        dagster_instance=pipe.instance,
        dagster_run=run,
        resources=dict(pipe.defs.resources or {}),
    ) as context:
        outcome = sensor(context.for_run_failure())
    assert isinstance(outcome, SkipReason)
    return outcome.skip_message or ""


def evaluate_health_sensor(pipe: Pipeline) -> str:
    sensor = pipe.defs.resolve_sensor_def(names.HEALTH_ALERTS_SENSOR)
    with build_sensor_context(
        instance=pipe.instance, resources=dict(pipe.defs.resources or {}), sensor_name=sensor.name
    ) as context:
        outcome: Any = sensor(context)
    assert isinstance(outcome, SkipReason)
    return outcome.skip_message or ""


def write_school(backend: Backend) -> None:
    b = LMSBuilder(backend.lms_url).school()
    b.attempt(1, 1, 200, "graded", t(3, 23, 50), submitted_at=t(4, 0, 20), graded_at=t(4, 9), score=20).write()


def test_an_in_process_run_is_final_even_with_run_retries(tmp_path: Path, fake_zulip: FakeZulip) -> None:
    """``lms-activity monitor`` executes runs in-process: Dagster cannot retry them (no code location
    origin), so one that fails alerts although the instance retries runs (the daemon test covers a
    run Dagster does retry: its first failure does not alert)."""
    fake_zulip.add_channel(CHANNEL)
    backend = sqlite_backend(tmp_path)  # no LMS file yet: the ingest run fails
    pipe = pipeline(backend, fake_zulip, retries=1)
    result = failed_ingest(pipe)
    assert pipe.instance.get_run_by_id(result.run_id).tags.get("dagster/will_retry") == "true"  # type: ignore[union-attr]
    assert "1 opened, 1 sent" in evaluate_failure_sensor(pipe, result)
    assert len(fake_zulip.channel_messages(CHANNEL)) == 1


def test_a_run_that_failed_for_good_alerts_once_then_resolves_once(tmp_path: Path, fake_zulip: FakeZulip) -> None:
    fake_zulip.add_channel(CHANNEL)
    backend = sqlite_backend(tmp_path)
    pipe = pipeline(backend, fake_zulip, retries=0)  # no retries: the first failure is final
    first = failed_ingest(pipe)
    assert "1 opened, 1 sent" in evaluate_failure_sensor(pipe, first)
    again = failed_ingest(pipe)  # the same window fails again: the same incident
    assert "nothing new" in evaluate_failure_sensor(pipe, again)
    [alert] = fake_zulip.channel_messages(CHANNEL, "lms-activity alerts")
    assert "**lms_ingest_job failed for good (2024-05-03..2024-05-04)**" in alert.content
    assert f"{UI}/runs/{first.run_id}" in alert.content
    assert "failed in step `raw_" in alert.content  # the failing step, its error on one line
    error_line = alert.content.splitlines()[1]
    assert "ConfigError: LMS_DATABASE_URL: SQLite database" in error_line and "lms.sqlite3 does not exist" in error_line

    write_school(backend)
    pipe.ingest("2024-05-03", "2024-05-04")
    assert "1 resolved" in evaluate_health_sensor(pipe)
    assert "nothing new" in evaluate_health_sensor(pipe)
    opened, resolved = fake_zulip.channel_messages(CHANNEL)
    assert opened == alert and resolved.content.startswith(":check: Resolved: **lms_ingest_job failed for good")


def test_event_log_checks_and_metadata_show_the_backlog_and_the_dead_letter(
    tmp_path: Path, fake_zulip: FakeZulip
) -> None:
    backend = sqlite_backend(tmp_path)
    write_school(backend)
    pipe = pipeline(backend, fake_zulip, retries=0)
    pipe.ingest("2024-05-03", "2024-05-04")
    assert {
        k: (e.passed, e.metadata["dead_letter"].value) for k, e in checks(pipe.audit()).items() if k == "dead_letter"
    } == {"dead_letter": (True, 0)}
    log = wh.lms_event_log
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    pipe.execute(log.insert().values(event_id=1, mentor_id=5, status="failed", attempts=6, error_message="HTTP 400"))
    pipe.execute(log.insert().values(event_id=2, mentor_id=5, created_at=old))
    found = checks(pipe.audit())
    backlog, dead = found[names.BACKLOG_CHECK], found[names.DEAD_LETTER_CHECK]
    assert not backlog.passed and backlog.metadata["pending"].value == 1
    assert backlog.metadata["oldest_pending_minutes"].value >= 179
    assert not dead.passed and dead.metadata["dead_letter"].value == 1
    assert dead.metadata["retry_command"].value == "lms-activity monitor --process-pending"
    assert {e.severity.value for e in (backlog, dead)} == {"WARN"}

    notify = pipe.notify()  # the outbox's materialisation carries the dead letter too
    assert metadata(notify, names.LMS_EVENT_LOG)["dead_letter"] == 1


def test_event_and_feature_assets_carry_a_freshness_policy(tmp_path: Path, fake_zulip: FakeZulip) -> None:
    pipe = pipeline(sqlite_backend(tmp_path), fake_zulip, retries=0)
    graph = pipe.defs.resolve_asset_graph()
    fresh = {
        key: graph.get(AssetKey(key)).freshness_policy
        for key in (names.LMS_ACTIVITY_EVENTS, names.AI_READY_EVENTS, names.STUDENT_DAILY_ACTIVITY)
    }
    assert all(isinstance(p, TimeWindowFreshnessPolicy) for p in fresh.values())
    assert {p.fail_window.to_timedelta() for p in fresh.values()} == {dt.timedelta(days=1)}  # type: ignore[union-attr]


def test_alert_sensors_are_on_by_default(tmp_path: Path, fake_zulip: FakeZulip) -> None:
    pipe = pipeline(sqlite_backend(tmp_path), fake_zulip, retries=0)
    for name in (names.RUN_FAILURE_ALERTS_SENSOR, names.HEALTH_ALERTS_SENSOR):
        assert pipe.defs.resolve_sensor_def(name).default_status == DefaultSensorStatus.RUNNING


def add_tick(instance: DagsterInstance, state: Any, status: Any, at: float, error: str | None = None) -> None:
    from dagster._core.scheduler.instigation import InstigatorType, TickData
    from dagster._utils.error import SerializableErrorInfo

    instance.create_tick(
        TickData(
            instigator_origin_id=state.instigator_origin_id,
            instigator_name=state.instigator_name,
            instigator_type=InstigatorType.SENSOR,
            status=status,
            timestamp=at,
            selector_id=state.selector_id,
            error=SerializableErrorInfo(error, [], "OperationalError") if error else None,
        )
    )


def test_a_sensor_failing_three_ticks_in_a_row_alerts_once_and_resolves(tmp_path: Path, fake_zulip: FakeZulip) -> None:
    """The ticks as the daemon stores them in the instance (created here through Dagster's storage API)."""
    from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteRepositoryOrigin
    from dagster._core.scheduler.instigation import InstigatorState, InstigatorStatus, InstigatorType, TickStatus

    fake_zulip.add_channel(CHANNEL)
    backend = sqlite_backend(tmp_path)
    write_school(backend)
    (tmp_path / "dagster_home").mkdir()
    with DagsterInstance.local_temp(str(tmp_path / "dagster_home")) as instance:
        alerts = AlertsResource(stream=CHANNEL, ui_url=UI)
        pipe = Pipeline(backend, instance=instance, resources={"zulip": fast_zulip(fake_zulip), "alerts": alerts})
        repository = RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("lms_activity_pipeline"), "__repository__")
        state = InstigatorState(
            repository.get_instigator_origin(names.ACTIVITY_SENSOR), InstigatorType.SENSOR, InstigatorStatus.RUNNING
        )
        instance.add_instigator_state(state)
        pipe.ingest("2024-05-03", "2024-05-04")  # no lag, nothing pending: only the ticks matter
        start = time.time()
        for n in range(2):
            add_tick(instance, state, TickStatus.FAILURE, start + n, "OperationalError: connection refused")
        assert "nothing new" in evaluate_health_sensor(pipe)  # two failed ticks: not yet an incident
        add_tick(instance, state, TickStatus.FAILURE, start + 2, "OperationalError: connection refused")
        assert "1 opened, 1 sent" in evaluate_health_sensor(pipe)
        add_tick(instance, state, TickStatus.FAILURE, start + 3, "OperationalError: connection refused")
        assert "nothing new" in evaluate_health_sensor(pipe)
        add_tick(instance, state, TickStatus.SKIPPED, start + 4)
        assert "1 resolved" in evaluate_health_sensor(pipe)
    opened, resolved = fake_zulip.channel_messages(CHANNEL)
    assert "**Sensor lms_activity_sensor keeps failing**" in opened.content
    assert "3 ticks in a row failed; the last: `OperationalError: connection refused`" in opened.content
    assert resolved.content.startswith(":check: Resolved: **Sensor lms_activity_sensor keeps failing**")


def test_a_ui_materialisation_that_failed_for_good_alerts_too(tmp_path: Path, fake_zulip: FakeZulip) -> None:
    """ "However launched": Dagster's implicit asset job (what the UI runs) materialising the events."""
    fake_zulip.add_channel(CHANNEL)
    pipe = pipeline(sqlite_backend(tmp_path), fake_zulip, retries=0)  # no LMS file: the run fails
    job = pipe.defs.resolve_implicit_global_asset_job_def()
    assert job.name == names.IMPLICIT_ASSET_JOB
    result = job.execute_in_process(
        instance=pipe.instance,
        partition_key="2024-05-03",
        asset_selection=[AssetKey(n) for n in names.INGEST_ASSETS],
        resources=dict(pipe.defs.resources or {}),
        raise_on_error=False,
    )
    assert not result.success
    assert "1 opened, 1 sent" in evaluate_failure_sensor(pipe, result)
    [alert] = fake_zulip.channel_messages(CHANNEL)
    assert "**Asset materialisation (UI or backfill) failed for good (2024-05-03)**" in alert.content
