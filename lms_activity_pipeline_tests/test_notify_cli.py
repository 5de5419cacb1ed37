"""``lms-activity monitor``: notifications after a poll, and ``--process-pending``, as recorded Dagster runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import DagsterInstance, RunsFilter

from lms_activity_pipeline import cli
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.fake_zulip import FakeZulip
from lms_activity_pipeline_tests.notify_helpers import (
    add_mentors,
    fast_zulip,
    recent_days,
    recent_school,
)
from lms_activity_pipeline_tests.pipeline import Pipeline, op_metadata


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


def runs_of(home: Path, job: str) -> list:  # noqa: ANN401 - Dagster run records
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
