"""The LMS_RISK_* settings and the student_risk schedule (no database: definitions and parsers only)."""

from __future__ import annotations

import datetime as dt

import pytest
from dagster import build_schedule_context

from lms_activity_pipeline.errors import ConfigError
from lms_activity_pipeline.settings import load_settings

pytestmark = pytest.mark.unit


def test_risk_settings_defaults_and_bad_values(tmp_path) -> None:
    settings = load_settings({"LMS_HOME": str(tmp_path)})
    assert (settings.risk_inactive_days, settings.risk_digest_frequency, settings.risk_model) == (7, "weekly", "rules")
    chosen = load_settings(
        {"LMS_HOME": str(tmp_path), "LMS_RISK_DIGEST_FREQUENCY": "Daily", "LMS_RISK_INACTIVE_DAYS": "10"}
    )
    assert (chosen.risk_digest_frequency, chosen.risk_inactive_days) == ("daily", 10)
    with pytest.raises(ConfigError, match="LMS_RISK_DIGEST_FREQUENCY='hourly' must be one of immediate, daily, weekly"):
        load_settings({"LMS_HOME": str(tmp_path), "LMS_RISK_DIGEST_FREQUENCY": "hourly"})
    with pytest.raises(ConfigError, match="LMS_RISK_MODEL='neural' must be one of rules, learned"):
        load_settings({"LMS_HOME": str(tmp_path), "LMS_RISK_MODEL": "neural"})
    with pytest.raises(ConfigError, match="LMS_RISK_INACTIVE_DAYS"):
        load_settings({"LMS_HOME": str(tmp_path), "LMS_RISK_INACTIVE_DAYS": "0"})


def test_risk_schedule_requests_todays_partition_each_hour(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LMS_HOME", str(tmp_path))
    monkeypatch.setenv("LMS_PARTITIONS_START", "2024-01-01")
    from lms_activity_pipeline_tests.support.pipeline import load_definitions

    defs = load_definitions({"LMS_HOME": str(tmp_path), "LMS_PARTITIONS_START": "2024-01-01"})
    schedule = defs.resolve_schedule_def("student_risk_schedule")
    assert schedule.cron_schedule == "5 * * * *"
    when = dt.datetime(2025, 3, 4, 15, 5, tzinfo=dt.UTC)
    context = build_schedule_context(scheduled_execution_time=when, repository_def=defs.get_repository_def())
    requests = schedule.evaluate_tick(context).run_requests
    assert [(r.partition_key, r.run_key) for r in requests or []] == [("2025-03-04", "2025-03-04-15")]


def test_feedback_schedule_runs_hourly_only_with_zulip(tmp_path) -> None:
    from lms_activity_pipeline.defs.resources import ZulipResource
    from lms_activity_pipeline_tests.support.pipeline import load_definitions

    defs = load_definitions({"LMS_HOME": str(tmp_path), "LMS_PARTITIONS_START": "2024-01-01"})
    schedule = defs.resolve_schedule_def("risk_feedback_schedule")
    when = dt.datetime(2025, 3, 4, 15, 35, tzinfo=dt.UTC)
    off = schedule.evaluate_tick(
        build_schedule_context(scheduled_execution_time=when, resources={"zulip": ZulipResource()})
    )
    assert not off.run_requests and "no Zulip configured" in (off.skip_message or "")
    zulip = ZulipResource(site="http://127.0.0.1:9", email="bot@example.com", api_key="k")
    on = schedule.evaluate_tick(build_schedule_context(scheduled_execution_time=when, resources={"zulip": zulip}))
    assert [r.run_key for r in on.run_requests or []] == ["risk-feedback-2025030415"]
