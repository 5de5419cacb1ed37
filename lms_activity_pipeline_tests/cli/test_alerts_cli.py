"""Alerts and the dead letter through ``lms-activity monitor``: --stats, --process-pending, --once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import RunRequest

from lms_activity_pipeline import names
from lms_activity_pipeline.cli.poller import Monitor
from lms_activity_pipeline.defs import runs
from lms_activity_pipeline.defs.resources import AlertsResource
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.cli.test_cli import env_for, live_school, run_cli
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip
from lms_activity_pipeline_tests.support.notify_helpers import fast_zulip
from lms_activity_pipeline_tests.support.pipeline import Pipeline


def test_stats_show_the_dead_letter_and_process_pending_retries_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = Backend("sqlite", f"sqlite:///{tmp_path / 'lms.sqlite3'}", f"sqlite:///{tmp_path / 'wh.sqlite3'}")
    live_school(backend)
    env = env_for(backend, tmp_path)
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    pipe = Pipeline(backend)
    log = wh.lms_event_log
    pairs, mentors = pipe.count(log), pipe.log_rows()["mentor_id"].nunique()
    assert pairs >= 2
    # Zulip rejected them until the attempt cap: no automatic run takes them again.
    pipe.execute(log.update().values(status="failed", attempts=6, error_message="HTTP 400: rejected"))
    capsys.readouterr()
    assert run_cli(monkeypatch, env, "monitor", "--stats") == 0
    out = capsys.readouterr().out
    assert (
        f"dead letter:        {pairs} pairs of {mentors} mentors (not retried automatically; after a fix: "
        "lms-activity monitor --process-pending)" in out
    )

    assert run_cli(monkeypatch, env, "monitor", "--process-pending") == 0  # no Zulip configured: dry-run
    with pipe.warehouse.engine.connect() as conn:
        assert set(conn.execute(sa.select(log.c.status)).scalars()) == {"dry_run"}
    capsys.readouterr()
    assert run_cli(monkeypatch, env, "monitor", "--stats") == 0
    assert "dead letter:        0 pairs of 0 mentors\n" in capsys.readouterr().out


def test_monitor_once_evaluates_the_alerts_like_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fake_zulip: FakeZulip
) -> None:
    """One orchestration path: ``monitor --once`` evaluates lms_health_alerts (a backlog alerts once, then
    resolves once)."""
    fake_zulip.add_channel("ops")
    backend = Backend("sqlite", f"sqlite:///{tmp_path / 'lms.sqlite3'}", f"sqlite:///{tmp_path / 'wh.sqlite3'}")
    live_school(backend)
    zulip = {"ZULIP_SITE": fake_zulip.url, "ZULIP_EMAIL": fake_zulip.email, "ZULIP_API_KEY": fake_zulip.api_key}
    env = env_for(backend, tmp_path, LMS_ALERT_ZULIP_STREAM="ops", LMS_NOTIFY_MENTORS_ENABLED="false", **zulip)
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0  # notifications off: the pairs stay pending
    pipe = Pipeline(backend)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    pipe.execute(wh.lms_event_log.update().values(created_at=old))
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    [alert] = fake_zulip.channel_messages("ops", "lms-activity alerts")
    assert "Mentor notifications are waiting" in alert.content

    pipe.execute(wh.lms_event_log.update().values(status="skipped"))
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    assert fake_zulip.channel_messages("ops")[-1].content.startswith(":check: Resolved: **Mentor notifications")


def test_a_run_the_monitor_executes_that_fails_alerts_once(tmp_path: Path, fake_zulip: FakeZulip) -> None:
    """``lms-activity monitor`` evaluates lms_run_failure_alerts on each run it executed that failed."""
    fake_zulip.add_channel("ops")
    backend = Backend("sqlite", f"sqlite:///{tmp_path / 'absent.sqlite3'}", f"sqlite:///{tmp_path / 'wh.sqlite3'}")
    alerts = AlertsResource(stream="ops")
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip), "alerts": alerts})
    lines: list[str] = []
    monitor = Monitor(pipe.defs, pipe.instance, dict(pipe.defs.resources or {}), on_log=lines.append)
    partition_key, range_tags = runs.partition_tags("2024-05-03", "2024-05-04")
    request = RunRequest(job_name=names.INGEST_JOB, partition_key=partition_key, tags=range_tags)
    assert not monitor._execute(request).success
    assert not monitor._execute(request).success  # the same window again: the same incident
    [alert] = fake_zulip.channel_messages("ops")
    assert "**lms_ingest_job failed for good (2024-05-03..2024-05-04)**" in alert.content
    assert any("failed for good: alerts: 1 opened, 1 sent" in line for line in lines)
