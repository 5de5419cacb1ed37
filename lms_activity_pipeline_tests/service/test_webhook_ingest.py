"""A row announced by an LMS webhook is ingested by the next ``monitor --once`` however old its
``updated_at`` (the poll alone leaves such a row to backfills), through the one orchestration path."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, DefaultSensorStatus
from fastapi.testclient import TestClient

from lms_activity_pipeline import names
from lms_activity_pipeline.service.app import create_app
from lms_activity_pipeline.settings import load_settings
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse import webhook_inbox
from lms_activity_pipeline.warehouse.webhook_inbox import Received
from lms_activity_pipeline_tests.cli.test_cli import env_for, event_keys, live_school, recent, run_cli, wait_for
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.polling.test_sensor import Tick, partitions
from lms_activity_pipeline_tests.service.helpers import SECRET, signed
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder, t
from lms_activity_pipeline_tests.support.pipeline import Pipeline
from lms_activity_pipeline_tests.support.processes import start_monitor_daemon


def announce(env: dict[str, str], row_id: int) -> None:
    with TestClient(create_app(load_settings({**env, "LMS_WEBHOOK_SECRET": SECRET}))) as client:
        body, headers = signed({"type": "attempt.changed", "data": {"id": row_id}})
        assert client.post("/webhooks/lms", content=body, headers=headers).status_code == 200


def test_a_row_older_than_the_lookback_announced_by_webhook_is_ingested_on_the_next_poll(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lms = live_school(backend)
    env = env_for(backend, tmp_path)
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    # Committed late: updated_at 90 min before the attempts mark (recent(4)), far outside the 5 min lookback.
    lms.attempt(7, 1, 201, "graded", recent(6), submitted_at=recent(5.8), graded_at=recent(5.5), score=45).write()
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    pipe = Pipeline(backend)
    assert not [k for k in pipe.events()["event_key"] if k.startswith("exam:7:")]  # the poll alone misses it

    announce(env, 7)
    capsys.readouterr()
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    assert "LMS webhooks announced rows" in capsys.readouterr().out
    keys = set(pipe.events()["event_key"])
    assert {"exam:7:exam_started", "exam:7:exam_completed"} <= keys
    inbox = wh.lms_webhook_inbox
    with pipe.warehouse.engine.connect() as conn:
        [(consumed_at, run_key)] = conn.execute(sa.select(inbox.c.consumed_at, inbox.c.run_key)).all()
    assert consumed_at is not None and run_key
    ingests = [r for r in DagsterInstance.get().get_runs() if r.job_name == "lms_ingest_job"]
    assert ingests[0].tags["dagster/run_key"] == run_key

    # announced again (a new webhook-id): the version is in the events already, no run is requested
    announce(env, 7)
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    assert len([r for r in DagsterInstance.get().get_runs() if r.job_name == "lms_ingest_job"]) == len(ingests)
    with pipe.warehouse.engine.connect() as conn:
        rows = conn.execute(sa.select(inbox.c.consumed_at, inbox.c.run_key).order_by(inbox.c.received_at)).all()
    assert rows[1][0] is not None and rows[1][1] is None


def test_the_dagster_sensor_requests_a_run_for_an_announced_old_row(backend: Backend) -> None:
    """The daemon's path: ``lms_activity_sensor`` itself reads the inbox (the same tick as the CLI)."""
    lms = LMSBuilder(backend.lms_url).school()
    lms.attempt(1, 1, 200, "graded", t(3, 10), submitted_at=t(3, 10, 30), graded_at=t(3, 11), score=42)
    lms.attempt(2, 2, 200, "submitted", t(4, 9), submitted_at=t(4, 9, 30))
    lms.write()
    tick = Tick(backend)
    tick()  # history
    lms.attempt(8, 3, 200, "submitted", t(3, 8), submitted_at=t(3, 8, 30)).write()  # a day older than the mark
    assert not tick().run_requests  # the poll alone: left to backfills

    webhook_inbox.record_many(tick.pipe.warehouse.engine, [Received("msg_old", "attempts", 8, dt.datetime.now(dt.UTC))])
    [request] = tick().run_requests
    assert partitions(request) == ("2024-05-03", "2024-05-03")
    assert not webhook_inbox.pending(tick.pipe.warehouse.engine)
    assert not tick().run_requests  # consumed: not requested again


def test_the_webhook_sensor_polls_only_when_an_announcement_waits_and_shares_the_cursor(backend: Backend) -> None:
    """``lms_webhook_sensor`` ticks often but polls only when the inbox holds an announcement; its poll is
    ``lms_activity_sensor``'s (one cursor): what one requested, the other never requests again."""
    lms = LMSBuilder(backend.lms_url).school()
    lms.attempt(1, 1, 200, "graded", t(3, 10), submitted_at=t(3, 10, 30), graded_at=t(3, 11), score=42)
    lms.attempt(2, 2, 200, "submitted", t(4, 9), submitted_at=t(4, 9, 30))
    lms.write()
    poll, hook = Tick(backend), Tick(backend, names.WEBHOOK_SENSOR)
    assert hook().skip_message == "no LMS webhook waiting in lms_webhook_inbox"  # history waits for the poll
    assert poll().run_requests  # history
    lms.attempt(8, 3, 200, "submitted", t(3, 8), submitted_at=t(3, 8, 30)).write()  # older than the mark
    lms.attempt(9, 3, 200, "submitted", t(4, 12), submitted_at=t(4, 12, 30)).write()  # a new change
    assert hook().skip_message == "no LMS webhook waiting in lms_webhook_inbox"  # no announcement: no poll

    webhook_inbox.record_many(poll.pipe.warehouse.engine, [Received("msg_8", "attempts", 8, dt.datetime.now(dt.UTC))])
    requested = hook().run_requests  # the poll's change and the announced old row, each with a companion
    ingests = [r for r in requested if r.job_name == names.INGEST_JOB]
    assert sorted(partitions(r) for r in ingests) == [("2024-05-03", "2024-05-03"), ("2024-05-04", "2024-05-04")]
    companions = [r for r in requested if r.job_name == names.NOTIFY_JOB]
    assert [c.tags[names.COMPANION_OF_TAG] for c in companions] == [r.run_key for r in ingests]
    assert [c.run_config["ops"][names.NOTIFY_OP]["config"]["after_ingest_run_key"] for c in companions] == [
        r.run_key for r in ingests
    ]
    assert not webhook_inbox.pending(poll.pipe.warehouse.engine)
    assert not poll().run_requests  # the other sensor's poll: nothing left to request
    assert hook().skip_message == "no LMS webhook waiting in lms_webhook_inbox"


def test_the_webhook_sensor_runs_by_default_only_where_webhooks_are_configured(backend: Backend) -> None:
    sensor = Pipeline(backend).defs.resolve_sensor_def(names.WEBHOOK_SENSOR)
    assert sensor.default_status == DefaultSensorStatus.STOPPED and sensor.minimum_interval_seconds == 1
    configured = Pipeline(backend, LMS_WEBHOOK_SECRET=SECRET).defs.resolve_sensor_def(names.WEBHOOK_SENSOR)
    assert configured.default_status == DefaultSensorStatus.RUNNING
    disabled = Pipeline(backend, LMS_WEBHOOK_SECRET=SECRET, LMS_ACTIVITY_MONITOR_ENABLED="false")
    assert disabled.defs.resolve_sensor_def(names.WEBHOOK_SENSOR).default_status == DefaultSensorStatus.STOPPED


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_monitor_daemon_polls_at_once_when_a_webhook_arrives(backend: Backend, tmp_path: Path) -> None:
    """``monitor --daemon --interval 600`` would wait 10 minutes; a recorded webhook wakes it within seconds."""
    lms = live_school(backend)
    env = {**os.environ, **env_for(backend, tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = start_monitor_daemon(env, tmp_path, interval=600)
    try:
        wait_for(lambda: "exam:1:exam_failed" in event_keys(backend), proc)  # the first poll
        time.sleep(2)
        lms.attempt(3, 3, 200, "graded", recent(0.2), submitted_at=recent(0.1), graded_at=recent(0.05), score=49)
        lms.write()
        time.sleep(3)
        assert "exam:3:exam_started" not in event_keys(backend)  # no poll for 10 minutes...
        started = time.monotonic()
        webhook_inbox.record_many(
            Pipeline(backend).warehouse.engine, [Received("msg_now", "attempts", 3, dt.datetime.now(dt.UTC))]
        )
        wait_for(lambda: "exam:3:exam_started" in event_keys(backend), proc, timeout=60)  # ...but the webhook
        assert time.monotonic() - started < 60
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
