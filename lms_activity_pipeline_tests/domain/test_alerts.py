"""Alert incidents: dedup, open/resolve transitions, the hourly cap, failed-run rules (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from lms_activity_pipeline.domain.alerts import (
    Alert,
    FailedRun,
    Incident,
    IncidentStatus,
    MessageKind,
    RunRetries,
    one_line,
    partition_window,
    plan_alerts,
    run_failure_alert,
    will_be_retried,
)

pytestmark = pytest.mark.unit

NOW = dt.datetime(2024, 5, 10, 12, tzinfo=dt.UTC)
BACKLOG = Alert("backlog", "Notifications waiting", "12 pairs pending for 75 min", "run --process-pending")


def incident(key: str, *, notified: bool = True, status: IncidentStatus = IncidentStatus.OPEN) -> Incident:
    return Incident(
        key, status, "t", NOW - dt.timedelta(minutes=30), NOW - dt.timedelta(minutes=30) if notified else None
    )


def test_new_incident_opens_and_sends_once() -> None:
    plan = plan_alerts([BACKLOG, BACKLOG], {}, scope={"backlog"}, sent_last_hour=0, now=NOW)
    assert [a.key for a in plan.to_open] == ["backlog"]
    assert [(m.key, m.kind) for m in plan.send] == [("backlog", MessageKind.OPENED)]
    assert "What to do: run --process-pending" in plan.send[0].text


def test_open_incident_seen_again_sends_nothing() -> None:
    plan = plan_alerts([BACKLOG], {"backlog": incident("backlog")}, scope={"backlog"}, sent_last_hour=0, now=NOW)
    assert plan.idle


def test_cleared_incident_resolves_once_with_a_message() -> None:
    plan = plan_alerts([], {"backlog": incident("backlog")}, scope={"backlog"}, sent_last_hour=0, now=NOW)
    assert plan.to_resolve == ("backlog",)
    assert [(m.key, m.kind) for m in plan.send] == [("backlog", MessageKind.RESOLVED)]
    assert "Resolved" in plan.send[0].text and "open 30 min" in plan.send[0].text
    done = Incident("backlog", IncidentStatus.RESOLVED, "t", NOW, NOW, NOW, NOW)
    assert plan_alerts([], {"backlog": done}, scope={"backlog"}, sent_last_hour=0, now=NOW).idle
    # A resolution whose message could not go out (Zulip down, the cap) is sent by a later evaluation.
    unsent = Incident("backlog", IncidentStatus.RESOLVED, "t", NOW, NOW, NOW, None)
    later = plan_alerts([], {"backlog": unsent}, scope=(), sent_last_hour=0, now=NOW)
    assert [(m.key, m.kind) for m in later.send] == [("backlog", MessageKind.RESOLVED)]


def test_out_of_scope_incidents_stay_open() -> None:
    """A run-failure sensor does not resolve the health checks' incidents (it did not check them)."""
    plan = plan_alerts([], {"backlog": incident("backlog")}, scope={"run_failed"}, sent_last_hour=0, now=NOW)
    assert plan.idle


def test_resolved_incident_that_returns_opens_again() -> None:
    resolved = incident("backlog", status=IncidentStatus.RESOLVED)
    plan = plan_alerts([BACKLOG], {"backlog": resolved}, scope={"backlog"}, sent_last_hour=0, now=NOW)
    assert [a.key for a in plan.to_open] == ["backlog"] and len(plan.send) == 1


def test_hourly_cap_holds_messages_and_sends_them_later() -> None:
    alerts = [Alert(f"mentor_failing:{i}", f"mentor {i}") for i in range(5)]
    plan = plan_alerts(alerts, {}, scope={"mentor_failing"}, sent_last_hour=8, now=NOW, per_hour=10)
    assert len(plan.to_open) == 5 and len(plan.send) == 2 and len(plan.held) == 3
    # Next evaluation: the incidents are stored open, the two sent are notified, three are not.
    stored = {a.key: incident(a.key, notified=a.key in {m.key for m in plan.send}) for a in alerts}
    later = plan_alerts(alerts, stored, scope={"mentor_failing"}, sent_last_hour=0, now=NOW, per_hour=10)
    assert not later.to_open and sorted(m.key for m in later.send) == sorted(m.key for m in plan.held)


def test_an_incident_never_announced_resolves_silently() -> None:
    plan = plan_alerts([], {"lag": incident("lag", notified=False)}, scope={"lag"}, sent_last_hour=0, now=NOW)
    assert plan.to_resolve == ("lag",) and not plan.send


@pytest.mark.parametrize(
    ("tags", "retries", "expected"),
    [
        ({"dagster/will_retry": "true"}, RunRetries(True, 1), True),
        ({"dagster/will_retry": "false"}, RunRetries(True, 1), False),
        ({}, RunRetries(True, 1), True),
        ({"dagster/retry_number": "1"}, RunRetries(True, 1), False),
        ({"dagster/retry_number": "1", "dagster/max_retries": "3"}, RunRetries(True, 1), True),
        ({}, RunRetries(False, 1), False),
    ],
)
def test_will_be_retried(tags: dict[str, str], retries: RunRetries, expected: bool) -> None:
    assert will_be_retried(tags, retries) is expected


def test_run_failure_alert_names_job_window_step_error_and_link() -> None:
    tags = {"dagster/asset_partition_range_start": "2024-05-03", "dagster/asset_partition_range_end": "2024-05-04"}
    run = FailedRun("lms_ingest_job", "abcdef12-3456", partition_window(tags), "lms_activity_events", "boom\nline 2")
    alert = run_failure_alert(run, "http://dagster.internal:3000/")
    assert alert.key == "run_failed:lms_ingest_job:2024-05-03..2024-05-04"
    assert alert.link == "http://dagster.internal:3000/runs/abcdef12-3456"
    assert "`lms_activity_events`" in alert.detail and "`boom line 2`" in alert.detail
    assert partition_window({"dagster/partition": "2024-05-03"}) == "2024-05-03"
    ui_run = run_failure_alert(FailedRun("__ASSET_JOB", "r1", "2024-05-03", None, "x"), "http://ui")
    assert ui_run.title == "Asset materialisation (UI or backfill) failed for good (2024-05-03)"
    assert partition_window({}) == "all"


def test_one_line_survives_backticks_and_length() -> None:
    assert one_line("a ``b`` c") == "```a ``b`` c```"
    assert one_line("`x`") == "`` `x` ``"
    assert len(one_line("x" * 1000)) == 302


def test_health_alerts_follow_the_thresholds() -> None:
    from lms_activity_pipeline.domain.alerts import HealthFacts, Thresholds, health_alerts

    limits = Thresholds(lag_minutes=30, backlog_minutes=60)
    quiet = HealthFacts(pending=3, pending_minutes=59, lag_minutes=29, sensor_errors={"s": (2, "boom")})
    assert health_alerts(quiet, limits, "http://ui") == []
    loud = HealthFacts(
        pending=3,
        pending_minutes=61,
        lag_minutes=31,
        sensor_errors={"lms_activity_sensor": (3, "OperationalError: refused")},
        failing_mentors=((7, 4, "HTTP 400: bad"),),
        unsettled_uncertain=2,
    )
    keys = [a.key for a in health_alerts(loud, limits, "http://ui/")]
    assert keys == [
        "backlog",
        "lag",
        "sensor_errors:lms_activity_sensor",
        "mentor_failing:7",
        "uncertain_unsettled",
    ]
    assert health_alerts(loud, Thresholds(lag_minutes=0, backlog_minutes=0, sensor_error_ticks=9), "x")[0].key == (
        "mentor_failing:7"
    )
