"""``lms-activity monitor``: notifications after a poll, and ``--process-pending``, as recorded Dagster runs."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance, RunsFilter

from lms_activity_pipeline import cli
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip
from lms_activity_pipeline_tests.support.notify_helpers import (
    add_mentors,
    fast_zulip,
    recent_days,
    recent_school,
)
from lms_activity_pipeline_tests.support.pipeline import Pipeline, op_metadata


@pytest.fixture
def cli_env(backend: Backend, fake_zulip: FakeZulip, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's environment: the backend's LMS and warehouse, the fake Zulip, a DAGSTER_HOME; returns that home."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    for name, value in {
        "LMS_DATABASE_URL": backend.lms_url,
        "LMS_WAREHOUSE_URL": backend.warehouse_url,
        "LMS_HOME": str(tmp_path / "lms_home"),
        "DAGSTER_HOME": str(home),
        "ZULIP_SITE": fake_zulip.url,
        "ZULIP_EMAIL": fake_zulip.email,
        "ZULIP_API_KEY": fake_zulip.api_key,
    }.items():
        monkeypatch.setenv(name, value)
    return home


def runs_of(home: Path, job: str) -> list:
    with DagsterInstance.from_config(str(home)) as instance:
        return instance.get_runs(RunsFilter(job_name=job))


def test_server_errors_fail_then_process_pending_sends_once(
    backend: Backend, fake_zulip: FakeZulip, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zulip_ids = add_mentors(fake_zulip)
    recent_school(backend.lms_url)
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip)})
    pipe.ingest(*recent_days())
    fake_zulip.fail_next("messages", 500, times=3, method="POST")
    meta = op_metadata(pipe.notify(event_types=("exam_passed",)))
    assert (meta["failed"], meta["sent"]) == (1, 0) and fake_zulip.messages == []
    row = pipe.log_rows().query("event_key == 'exam:1:exam_passed'").iloc[0]
    assert row["error_message"] == "gave up after 3 attempt(s): HTTP 500 BAD_REQUEST: Internal server error"

    # The server has recovered; the operator retries what is pending or failed, for one event type.
    assert cli.main(["monitor", "--process-pending", "--event-types", "exam_passed"]) == 0
    out = capsys.readouterr().out
    assert "Processing pending and failed notifications (exam_passed)" in out and ": 1 sent, 0 skipped, 0 failed" in out
    assert [m.recipient_ids for m in fake_zulip.messages] == [[zulip_ids[10]]]
    assert "✅ **Alice Liddell** passed the exam" in fake_zulip.messages[0].content
    log = pipe.log_rows()
    assert log.query("event_key == 'exam:1:exam_passed'")["status"].item() == "sent"
    assert (log["status"] == "pending").sum() == 11  # other types were not part of this run
    [run] = runs_of(cli_env, "notify_mentors_job")
    assert run.tags["lms/trigger"] == "cli-process-pending" and run.is_success

    assert cli.main(["monitor", "--process-pending", "--event-types", "exam_passed"]) == 0
    assert len(fake_zulip.messages) == 1  # nothing left to send: sent once


def test_monitor_once_ingests_then_notifies(
    backend: Backend, fake_zulip: FakeZulip, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_mentors(fake_zulip)
    recent_school(backend.lms_url)
    assert cli.main(["monitor", "--once"]) == 0
    out = capsys.readouterr().out
    assert (
        "12 notifications enqueued" in out
        and ": 12 sent, 0 skipped, 0 failed, 0 dry_run; 4 messages to 4 mentors" in out
    )
    assert len(fake_zulip.messages) == 4
    assert len(runs_of(cli_env, "lms_ingest_job")) == len(runs_of(cli_env, "notify_mentors_job")) == 1

    assert cli.main(["monitor", "--once"]) == 0  # nothing changed, nothing due: no new run, no message
    assert len(runs_of(cli_env, "notify_mentors_job")) == 1 and len(fake_zulip.messages) == 4
    assert cli.main(["monitor", "--stats"]) == 0
    assert "pending 0, sent 12, failed 0, skipped 0, dry_run 0" in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_incomplete_zulip_configuration_exits_with_one_line(
    backend: Backend, cli_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recent_school(backend.lms_url)
    monkeypatch.delenv("ZULIP_API_KEY")
    assert cli.main(["monitor", "--process-pending"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lms-activity: configuration error: ZULIP_API_KEY not set") and "\n" not in err


def wait_until(condition, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited early: {proc.stdout.read() if proc.stdout else ''}")
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_a_monitor_killed_while_sending_is_recovered_by_a_later_quiet_poll(
    backend: Backend,
    fake_zulip: FakeZulip,
    cli_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``monitor --once`` is killed (SIGKILL) while Zulip is storing its DM. The LMS stays quiet: polls start
    no run while the claim is young, say what the pair waits for, and once the claim is stale a poll starts
    the run that recovers it and finds the DM on Zulip: one DM, the pair ``sent`` with its id."""
    zulip_ids = add_mentors(fake_zulip, 10)
    recent_school(backend.lms_url)
    monkeypatch.setenv("LMS_EVENT_TYPES_TO_MONITOR", "exam_passed")  # one pair: alice's pass, to mentor 10
    fake_zulip.fail_next("messages", 200, delay=2.0, method="POST")  # Zulip stores it, slowly
    proc = subprocess.Popen(
        [sys.executable, "-m", "lms_activity_pipeline.cli", "monitor", "--once"],
        cwd=tmp_path,
        env=dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: fake_zulip.requests_to("messages", "POST"), timeout=120, proc=proc)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    wait_until(lambda: fake_zulip.messages, timeout=10)  # the server finished what the dead process asked
    [stored] = fake_zulip.messages_to(zulip_ids[10])
    pipe = Pipeline(backend)
    [row] = pipe.log_rows().to_dict("records")
    assert row["status"] == "pending" and row["claimed_by"] and row["sending_at"] is not None

    # Minutes later, nothing new in the LMS: the claim may be a live run's, so no run is started ...
    notify_runs = len(runs_of(cli_env, "notify_mentors_job"))
    assert cli.main(["monitor", "--once"]) == 0
    assert len(runs_of(cli_env, "notify_mentors_job")) == notify_runs
    # ... and a run that is started anyway says what the pair waits for, not "0 pairs still open".
    capsys.readouterr()
    assert cli.main(["monitor", "--process-pending"]) == 0
    out = capsys.readouterr().out
    assert (
        "0 sent, 0 skipped, 0 failed, 0 dry_run; 0 messages to 0 mentors; 1 pair still open: 1 claimed by a run in progress"
        in out
    )

    # Half an hour on, still nothing new in the LMS: the claim is stale, the poll starts the run that recovers it.
    log = wh.lms_event_log
    earlier = {
        c: row[c].to_pydatetime() - dt.timedelta(minutes=31)
        for c in ("claimed_at", "sending_at", "delivery_attempted_at")
    }
    pipe.execute(log.update().where(log.c.id == int(row["id"])).values(**earlier))
    assert cli.main(["monitor", "--once"]) == 0
    out = capsys.readouterr().out
    assert ": 1 sent, 0 skipped, 0 failed, 0 dry_run; 0 messages to 0 mentors; 0 pairs still open" in out
    [row] = pipe.log_rows().to_dict("records")
    assert (row["status"], row["notification_message_id"], row["delivery_uncertain"]) == ("sent", stored.id, False)
    assert len(fake_zulip.messages) == 1 and len(fake_zulip.requests_to("messages", "POST")) == 1
    assert len(runs_of(cli_env, "notify_mentors_job")) == notify_runs + 2
