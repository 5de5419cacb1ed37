"""lms_activity_sensor evaluated for real: cursors, run requests, run keys, late rows."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, DefaultSensorStatus, build_sensor_context
from sqlalchemy.engine import make_url

from lms_activity_pipeline import names
from lms_activity_pipeline.db import normalise_url
from lms_activity_pipeline.polling.followup import MAX_UNSEEN_TICKS, PendingRun, RunState, review
from lms_activity_pipeline.settings import load_settings
from lms_activity_pipeline.warehouse import poll_state
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder, t
from lms_activity_pipeline_tests.support.pipeline import Pipeline


@pytest.fixture
def lms(backend: Backend) -> LMSBuilder:
    b = LMSBuilder(backend.lms_url).school()
    b.attempt(1, 1, 200, "graded", t(3, 10), submitted_at=t(3, 10, 30), graded_at=t(3, 11), score=42)
    b.attempt(2, 2, 200, "submitted", t(4, 9), submitted_at=t(4, 9, 30))
    b.content_attempt(1, 3, 301, "in_progress", t(4, 8), progress_percent=30, updated_at=t(4, 8, 10))
    return b.write()


class Tick:
    """Evaluates the real sensor against a backend, carrying the cursor like the daemon does."""

    def __init__(self, backend: Backend, sensor: str = names.ACTIVITY_SENSOR, **env: str) -> None:
        self.pipe = Pipeline(backend, **env)
        self.sensor = self.pipe.defs.resolve_sensor_def(sensor)
        self.instance = DagsterInstance.ephemeral()
        self.cursor: str | None = None
        self.resources = self.pipe.defs.resources

    def saved_state(self) -> str | None:
        """The poll's cursor as stored in the warehouse (shared with lms-activity monitor)."""
        return poll_state.read_state(self.pipe.warehouse.engine).cursor

    def restore_state(self, cursor: str | None) -> None:
        table = wh.lms_monitor_state
        with self.pipe.warehouse.engine.begin() as conn:
            conn.execute(table.update().where(table.c.name == poll_state.POLLER).values(cursor=cursor))

    def __call__(self):
        context = build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources=self.resources,
            repository_def=self.pipe.defs.get_repository_def(),
        )
        data = self.sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return data


def partitions(request) -> tuple[str, str]:
    if request.partition_key:
        return request.partition_key, request.partition_key
    return request.tags[names.RANGE_START_TAG], request.tags[names.RANGE_END_TAG]


def test_first_tick_ingests_history_in_one_range_run_then_skips(backend: Backend, lms: LMSBuilder) -> None:
    tick = Tick(backend)
    first = tick()
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    assert partitions(request)[0] == "2024-05-03"  # the oldest attempt's day, through today
    assert request.run_config == {}  # a recompute of the whole history, on the configured executor
    assert "dagster/max_runtime" not in request.tags  # a first start's history may take hours
    stored = json.loads(tick.cursor)
    assert set(stored) == {"attempts", "content_attempts", "_pending"}
    assert [p["run_key"] for p in stored["_pending"]] == [request.run_key]  # followed until it succeeds

    second = tick()
    assert not second.run_requests
    assert "No LMS changes" in second.skip_message


def test_new_rows_request_an_incremental_run_for_their_days(backend: Backend, lms: LMSBuilder) -> None:
    tick = Tick(backend)
    tick()
    lms.attempt(3, 3, 201, "graded", t(5, 23, 30), submitted_at=t(6, 0, 10), graded_at=t(6, 1), score=80)
    lms.content_attempt(2, 1, 300, "completed", t(6, 9), completed_at=t(6, 9, 15), progress_percent=100)
    lms.write()
    data = tick()
    assert len(data.run_requests) == 1
    request = data.run_requests[0]
    assert partitions(request) == ("2024-05-05", "2024-05-06")
    config = request.run_config["ops"]["lms_activity_events"]["config"]
    assert config["changed_until"] == t(6, 9, 15).isoformat()
    assert config["changed_since"] < t(6, 1).isoformat()
    assert request.run_key.startswith("lms-")
    assert request.run_config["execution"] == {"config": {"in_process": {}}}  # no process per step
    assert request.tags["dagster/max_runtime"] == "3600"  # run monitoring ends a hung one

    # Running it ingests exactly the new events, incrementally.
    pipe = tick.pipe
    pipe.ingest("2024-05-03", "2024-05-04")
    result = pipe.defs.resolve_job_def("lms_ingest_job").execute_in_process(
        run_config=request.run_config, instance=pipe.instance, tags=request.tags, partition_key=request.partition_key
    )
    assert result.success
    assert {"exam:3:exam_started", "exam:3:exam_completed", "exam:3:exam_passed", "content:2:content_completed"} <= set(
        pipe.event_ids()
    )


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # LMS_EXECUTOR=celery needs a PostgreSQL warehouse
def test_incremental_runs_keep_a_configured_celery_executor(backend: Backend, lms: LMSBuilder) -> None:
    pytest.importorskip("dagster_celery", reason="dagster-celery is not installed (pip install -e '.[celery]')")
    tick = Tick(backend, LMS_EXECUTOR="celery")
    tick()
    lms.attempt(3, 3, 201, "graded", t(5, 23, 30), submitted_at=t(6, 0, 10), graded_at=t(6, 1), score=80).write()
    [request] = tick().run_requests
    assert "execution" not in request.run_config and "ops" in request.run_config  # steps go to the workers
    assert tick.pipe.defs.resolve_job_def("notify_mentors_job").executor_def.name == "in_process"  # one op


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_ticks_share_one_lms_connection(backend: Backend, lms: LMSBuilder) -> None:
    """Dagster builds the LMS resource again for every tick; the connection is opened once per process."""
    name = make_url(backend.lms_url).database
    observer = sa.create_engine(normalise_url(backend.lms_url), poolclass=sa.pool.NullPool)

    def connections() -> int:
        with observer.connect() as conn:
            query = "SELECT count(*) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"
            return conn.execute(sa.text(query), {"n": name}).scalar_one()

    tick = Tick(backend)
    tick()
    after_one = connections()
    for _ in range(5):
        tick()
    assert connections() == after_one


def test_the_same_change_always_gets_the_same_run_key(backend: Backend, lms: LMSBuilder) -> None:
    tick = Tick(backend)
    tick()
    lms.attempt(3, 3, 201, "in_progress", t(7, 10)).write()
    before = tick.saved_state()
    first = tick()
    tick.restore_state(before)  # the tick's requests were lost (the daemon died): it is evaluated again
    again = tick()
    assert [r.run_key for r in first.run_requests] == [r.run_key for r in again.run_requests]


def test_late_row_inside_the_lookback_is_still_picked_up(backend: Backend, lms: LMSBuilder) -> None:
    tick = Tick(backend)
    tick()
    # Committed late: updated_at 08:07 is older than the content cursor mark (08:10) but inside the 5 min lookback.
    lms.content_attempt(5, 2, 302, "in_progress", t(4, 8, 5), progress_percent=91, updated_at=t(4, 8, 7)).write()
    data = tick()
    assert len(data.run_requests) == 1
    assert partitions(data.run_requests[0]) == ("2024-05-04", "2024-05-04")
    assert not tick().run_requests  # seen once, not again


def test_row_older_than_the_lookback_is_left_to_backfills(backend: Backend, lms: LMSBuilder) -> None:
    tick = Tick(backend)
    tick()
    lms.content_attempt(6, 2, 302, "in_progress", t(4, 7), updated_at=t(4, 7, 0)).write()  # 70 min before the mark
    assert not tick().run_requests


def test_a_late_row_that_fits_the_last_window_still_gets_a_new_run_key(backend: Backend, lms: LMSBuilder) -> None:
    """Rows at 09:56 and 10:00 were ingested; then a row committed late at 09:58 shows up. Its reprocessing
    window is the same (09:56..10:00) as the run that already happened, but it is another change: a new
    run key, or the daemon (and ``monitor``) would drop it as already done and the row would be lost."""
    tick = Tick(backend)
    tick()
    lms.attempt(3, 3, 201, "in_progress", t(5, 9, 50), updated_at=t(5, 9, 56))
    lms.attempt(4, 1, 201, "in_progress", t(5, 9, 55), updated_at=t(5, 10, 0)).write()
    [first] = tick().run_requests
    lms.attempt(5, 2, 201, "in_progress", t(5, 9, 52), updated_at=t(5, 9, 58)).write()
    [late] = tick().run_requests

    def window(r):
        return {k: r.run_config["ops"]["lms_activity_events"]["config"][k] for k in ("changed_since", "changed_until")}

    assert window(late) == window(first) and partitions(late) == partitions(first)
    assert late.run_key != first.run_key

    pipe, job = tick.pipe, tick.pipe.defs.resolve_job_def("lms_ingest_job")
    pipe.ingest("2024-05-03", "2024-05-04")
    for request in (first, late):
        run = job.execute_in_process(
            run_config=request.run_config,
            instance=pipe.instance,
            tags=request.tags,
            partition_key=request.partition_key,
        )
        assert run.success
    assert {"exam:3:exam_started", "exam:4:exam_started", "exam:5:exam_started"} <= set(pipe.event_ids())


def test_interval_status_and_lookback_come_from_the_environment(backend: Backend, lms: LMSBuilder) -> None:
    pipe = Pipeline(
        backend,
        LMS_ACTIVITY_POLL_INTERVAL="17",
        LMS_ACTIVITY_MONITOR_ENABLED="false",
        LMS_ACTIVITY_LOOKBACK_SECONDS="7200",
    )
    sensor = pipe.defs.resolve_sensor_def(names.ACTIVITY_SENSOR)
    assert sensor.minimum_interval_seconds == 17 and sensor.default_status == DefaultSensorStatus.STOPPED
    assert (
        Pipeline(backend).defs.resolve_sensor_def(names.ACTIVITY_SENSOR).default_status == DefaultSensorStatus.RUNNING
    )

    tick = Tick(backend, LMS_ACTIVITY_LOOKBACK_SECONDS="7200")
    tick()
    lms.content_attempt(6, 2, 302, "in_progress", t(4, 7), updated_at=t(4, 7, 0)).write()  # 70 min before the mark
    [request] = tick().run_requests  # inside a two-hour lookback
    assert partitions(request) == ("2024-05-04", "2024-05-04")


def test_a_run_that_failed_for_good_is_requested_again_until_it_succeeds(backend: Backend, lms: LMSBuilder) -> None:
    tick = Tick(backend)
    tick.instance = tick.pipe.instance  # the runs the sensor requests land in this instance

    def launch(request, defs=tick.pipe.defs, **tags: str):
        return defs.resolve_job_def("lms_ingest_job").execute_in_process(
            run_config=request.run_config,
            instance=tick.instance,
            partition_key=request.partition_key,
            tags={**request.tags, "dagster/run_key": request.run_key, **tags},
            raise_on_error=False,
        )

    [history] = tick().run_requests
    assert "1 requested run(s) not finished" in tick().skip_message  # still queued in the daemon
    assert launch(history, **{names.RANGE_END_TAG: "2024-05-06"}).success  # (the days up to today hold nothing)
    assert "_pending" not in json.loads(tick().cursor or "{}")  # followed to success, forgotten

    lms.attempt(3, 3, 201, "graded", t(5, 10), submitted_at=t(5, 10, 30), graded_at=t(5, 11), score=80).write()
    [request] = tick().run_requests
    gone = backend.lms_url + "_gone" if backend.name == "sqlite" else backend.lms_url.replace("/lms_src", "/nowhere")
    broken = Pipeline(Backend(backend.name, gone, backend.warehouse_url))
    assert not launch(request, broken.defs).success  # the LMS was unreachable: the run failed, no retry left
    [again] = tick().run_requests
    assert again.run_key == f"{request.run_key}-again1" and again.run_config == request.run_config
    assert partitions(again) == partitions(request)
    assert "exam:3:exam_started" not in tick.pipe.event_ids()
    assert launch(again).success
    assert {"exam:3:exam_started", "exam:3:exam_passed"} <= set(tick.pipe.event_ids())
    assert not tick().run_requests and "_pending" not in json.loads(tick.cursor)


def test_a_window_is_requested_at_most_five_times() -> None:
    plan = PendingRun("lms-abc", "2024-05-05", "2024-05-05", None, None, 3)
    states = {"lms-abc": RunState.FAILED}
    pending = [plan]
    keys = []
    for _ in range(6):
        result = review(pending, lambda key: states.get(key, RunState.FAILED))
        keys += [p.run_key for p in result.again]
        pending = result.pending
    assert keys == ["lms-abc-again1", "lms-abc-again2", "lms-abc-again3", "lms-abc-again4"] and pending == []
    # A request no run ever answered (the process that should launch it died) is requested again, not lost.
    never_launched = PendingRun("lms-x", "2024-05-05", "2024-05-05", None, None, 1)
    pending, again = [never_launched], []
    for _ in range(MAX_UNSEEN_TICKS + 1):
        result = review(pending, lambda key: RunState.WAITING)
        pending, again = result.pending, again + result.again
    assert [p.run_key for p in again] == ["lms-x-again1"] and [p.run_key for p in pending] == ["lms-x-again1"]


def test_the_first_tick_with_no_lms_configured_creates_the_demo_and_requests_its_history(tmp_path) -> None:
    """Opening the UI before any `lms-activity monitor --once`: the sensor makes the demo LMS, as the CLI does."""
    from lms_activity_pipeline_tests.support.pipeline import load_definitions

    defs = load_definitions({"LMS_HOME": str(tmp_path)})
    sensor = defs.resolve_sensor_def(names.ACTIVITY_SENSOR)
    instance = DagsterInstance.ephemeral()
    context = build_sensor_context(
        instance=instance, resources=defs.resources, repository_def=defs.get_repository_def()
    )
    data = sensor.evaluate_tick(context)
    assert (tmp_path / "demo_lms.sqlite3").exists()
    [request] = data.run_requests
    assert request.tags[names.RANGE_START_TAG] == load_settings({"LMS_HOME": str(tmp_path)}).partitions_start
