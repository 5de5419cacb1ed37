"""Operational alerts through the real ``zulip`` client and the loopback Zulip: once per incident, one
"resolved" message, the hourly cap, Zulip down, two processes, no channel configured."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest
import sqlalchemy as sa

from lms_activity_pipeline import db
from lms_activity_pipeline.domain.alerts import HEALTH_KINDS, Thresholds, health_alerts
from lms_activity_pipeline.domain.delivery import RetryPolicy
from lms_activity_pipeline.notify.alerts import AlertReport, AlertSender, raise_alerts
from lms_activity_pipeline.notify.zulip_gateway import ZulipGateway
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.alerts import AlertStore
from lms_activity_pipeline.warehouse.health import outbox_health
from lms_activity_pipeline.warehouse.store import Warehouse
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip

CHANNEL, TOPIC = "ops", "lms-activity alerts"
LIMITS = Thresholds(lag_minutes=30, backlog_minutes=60)
LOG = logging.getLogger("alerts-test")


def sender(server: FakeZulip, channel: str | None = CHANNEL) -> AlertSender:
    gateway = ZulipGateway({"site": server.url, "email": server.email, "api_key": server.api_key}, timeout=5)
    return AlertSender(gateway, channel, TOPIC, RetryPolicy(max_attempts=2, backoff_seconds=0.01))


def store_for(backend: Backend) -> tuple[Warehouse, AlertStore]:
    warehouse = Warehouse(backend.warehouse_url)
    warehouse.migrate()
    return warehouse, AlertStore(warehouse.engine)


def add_pairs(warehouse: Warehouse, rows: list[dict[str, Any]]) -> None:
    with db.write_transaction(warehouse.engine) as conn:
        for row in rows:  # one statement each: the rows do not all have the same columns
            conn.execute(wh.lms_event_log.insert().values(**row))


def check(warehouse: Warehouse, store: AlertStore, send: AlertSender, now: dt.datetime) -> AlertReport:
    """One evaluation of the health checks, as the sensor does it."""
    facts = outbox_health(warehouse.engine, now).facts(now)
    return raise_alerts(store, send, health_alerts(facts, LIMITS, "http://ui"), scope=HEALTH_KINDS, now=now, log=LOG)


def test_backlog_alerts_once_and_resolves_once(backend: Backend, fake_zulip: FakeZulip) -> None:
    fake_zulip.add_channel(CHANNEL)
    warehouse, store = store_for(backend)
    now = dt.datetime.now(dt.UTC)
    add_pairs(
        warehouse, [{"event_id": i, "mentor_id": 1, "created_at": now - dt.timedelta(minutes=90)} for i in (1, 2)]
    )
    send = sender(fake_zulip)

    first = check(warehouse, store, send, now)
    assert (first.opened, first.sent) == (["backlog"], ["backlog"])
    for minutes in (1, 2):  # still pending: no second message
        assert check(warehouse, store, send, now + dt.timedelta(minutes=minutes)).sent == []
    [opened] = fake_zulip.channel_messages(CHANNEL, TOPIC)
    assert "Mentor notifications are waiting" in opened.content and "2 pair(s) pending" in opened.content
    assert "lms-activity monitor --process-pending" in opened.content

    with db.write_transaction(warehouse.engine) as conn:
        conn.execute(wh.lms_event_log.update().values(status="sent", processed_at=now))
    cleared = check(warehouse, store, send, now + dt.timedelta(minutes=3))
    assert (cleared.resolved, cleared.sent) == (["backlog"], ["backlog"])
    assert check(warehouse, store, send, now + dt.timedelta(minutes=4)).sent == []
    opened_again, resolved = fake_zulip.channel_messages(CHANNEL)
    assert opened_again == opened and resolved.content.startswith(
        ":check: Resolved: **Mentor notifications are waiting**"
    )
    # A fresh process (a restart) reads the same state: nothing is announced again.
    assert check(warehouse, AlertStore(Warehouse(backend.warehouse_url).engine), send, now).sent == []


def test_hourly_cap_holds_and_sends_the_rest_next_hour(tmp_path: Any, fake_zulip: FakeZulip) -> None:
    fake_zulip.add_channel(CHANNEL)
    warehouse, store = store_for(Backend("sqlite", "", f"sqlite:///{tmp_path / 'wh.sqlite3'}"))
    now = dt.datetime.now(dt.UTC)
    # 12 mentors whose DMs keep failing: 3 certain failures each, nothing delivered.
    add_pairs(
        warehouse,
        [
            {
                "event_id": e,
                "mentor_id": m,
                "status": "failed",
                "attempts": 6,
                "processed_at": now,
                "error_message": "x",
            }
            for m in range(1, 13)
            for e in range(m * 10, m * 10 + 3)
        ],
    )
    send = sender(fake_zulip)
    first = check(warehouse, store, send, now)
    assert len(first.opened) == 12 and len(first.sent) == 10 and len(first.held) == 2
    assert check(warehouse, store, send, now + dt.timedelta(minutes=30)).sent == []
    later = check(warehouse, store, send, now + dt.timedelta(minutes=61))
    assert sorted(later.sent) == sorted(first.held)
    assert len(fake_zulip.channel_messages(CHANNEL)) == 12
    health = outbox_health(warehouse.engine, now)
    assert (health.dead_letter, health.dead_letter_mentors) == (36, 12)


def test_zulip_down_during_an_alert_loses_nothing(tmp_path: Any, fake_zulip: FakeZulip) -> None:
    fake_zulip.add_channel(CHANNEL)
    warehouse, store = store_for(Backend("sqlite", "", f"sqlite:///{tmp_path / 'wh.sqlite3'}"))
    now = dt.datetime.now(dt.UTC)
    add_pairs(warehouse, [{"event_id": 1, "mentor_id": 1, "created_at": now - dt.timedelta(hours=2)}])
    add_pairs(
        warehouse,
        [{"event_id": e, "mentor_id": 2, "status": "failed", "attempts": 1, "processed_at": now} for e in (2, 3, 4)],
    )
    send = sender(fake_zulip)
    fake_zulip.stop()  # Zulip unreachable: the first alert fails, the second is not even tried
    down = check(warehouse, store, send, now)
    assert down.opened == ["backlog", "mentor_failing:2"] and not down.sent
    assert sorted(down.failed) == ["backlog", "mentor_failing:2"]
    rows = {r.key: r for r in store.incidents().values()}
    assert all(r.is_open and r.notified_at is None for r in rows.values())
    with warehouse.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(wh.lms_event_log)).scalar() == 4  # outbox intact

    fake_zulip.start()
    back = check(warehouse, store, sender(fake_zulip), now + dt.timedelta(minutes=5))
    assert sorted(back.sent) == ["backlog", "mentor_failing:2"] and not back.opened
    assert len(fake_zulip.channel_messages(CHANNEL)) == 2


def test_a_5xx_then_success_sends_once_and_a_missing_channel_retries_later(
    tmp_path: Any, fake_zulip: FakeZulip
) -> None:
    warehouse, store = store_for(Backend("sqlite", "", f"sqlite:///{tmp_path / 'wh.sqlite3'}"))
    now = dt.datetime.now(dt.UTC)
    add_pairs(warehouse, [{"event_id": 1, "mentor_id": 1, "created_at": now - dt.timedelta(hours=2)}])
    send = sender(fake_zulip)
    rejected = check(warehouse, store, send, now)  # the channel does not exist: Zulip says so
    assert rejected.failed == ["backlog"] and "does not exist" in str(store_last_error(warehouse))
    fake_zulip.add_channel(CHANNEL)
    fake_zulip.fail_next("messages", 502)  # a gateway error before Zulip: retried under the policy
    again = check(warehouse, store, send, now + dt.timedelta(minutes=1))
    assert again.sent == ["backlog"] and store_last_error(warehouse) is None
    assert len(fake_zulip.channel_messages(CHANNEL)) == 1
    assert [r.status for r in fake_zulip.requests_to("messages", "POST")] == [400, 502, 200]


def store_last_error(warehouse: Warehouse) -> str | None:
    with warehouse.engine.connect() as conn:
        return conn.execute(sa.select(wh.lms_alert_incidents.c.last_error)).scalar()


def test_two_processes_announce_an_incident_once(tmp_path: Any, fake_zulip: FakeZulip) -> None:
    fake_zulip.add_channel(CHANNEL)
    url = f"sqlite:///{tmp_path / 'wh.sqlite3'}"
    warehouse, store = store_for(Backend("sqlite", "", url))
    other = AlertStore(db.create_engine(url))  # another process's engine on the same warehouse
    now = dt.datetime.now(dt.UTC)
    add_pairs(warehouse, [{"event_id": 1, "mentor_id": 1, "created_at": now - dt.timedelta(hours=2)}])
    facts = outbox_health(warehouse.engine, now).facts(now)
    alerts = health_alerts(facts, LIMITS, "http://ui")
    a = raise_alerts(store, sender(fake_zulip), alerts, scope=HEALTH_KINDS, now=now, log=LOG)
    b = raise_alerts(other, sender(fake_zulip), alerts, scope=HEALTH_KINDS, now=now, log=LOG)
    assert a.sent + b.sent == ["backlog"]
    assert len(fake_zulip.channel_messages(CHANNEL)) == 1


def test_without_a_channel_alerts_go_to_the_log_once(
    tmp_path: Any, fake_zulip: FakeZulip, caplog: pytest.LogCaptureFixture
) -> None:
    warehouse, store = store_for(Backend("sqlite", "", f"sqlite:///{tmp_path / 'wh.sqlite3'}"))
    now = dt.datetime.now(dt.UTC)
    add_pairs(warehouse, [{"event_id": 1, "mentor_id": 1, "created_at": now - dt.timedelta(hours=2)}])
    send = sender(fake_zulip, channel=None)
    with caplog.at_level(logging.WARNING, logger="alerts-test"):
        assert check(warehouse, store, send, now).logged == ["backlog"]
        assert check(warehouse, store, send, now).logged == []
    logged = [r.message for r in caplog.records if "ALERT (opened)" in r.message]
    assert len(logged) == 1 and "Mentor notifications are waiting" in logged[0]
    assert fake_zulip.requests_to("messages", "POST") == []


def test_a_mentor_keeps_failing_only_without_a_dm_delivered_since(backend: Backend) -> None:
    warehouse, _ = store_for(backend)
    now = dt.datetime.now(dt.UTC)
    hour = dt.timedelta(hours=1)
    failed = {"status": "failed", "attempts": 2, "error_message": "HTTP 400: bad"}
    add_pairs(
        warehouse,
        [
            # mentor 1: a DM delivered before the failures began -> keeps failing
            {"event_id": 1, "mentor_id": 1, "status": "sent", "processed_at": now - 5 * hour},
            *[{"event_id": e, "mentor_id": 1, "processed_at": now - hour, **failed} for e in (2, 3, 4)],
            # mentor 2: the same failures, then a DM delivered -> recovered
            *[{"event_id": e, "mentor_id": 2, "processed_at": now - 2 * hour, **failed} for e in (5, 6, 7)],
            {"event_id": 8, "mentor_id": 2, "status": "sent", "processed_at": now - hour},
            # mentor 3: two failures only
            *[{"event_id": e, "mentor_id": 3, "processed_at": now, **failed} for e in (9, 10)],
        ],
    )
    health = outbox_health(warehouse.engine, now)
    assert [(m.mentor_id, m.failed_pairs, m.last_error) for m in health.failing_mentors] == [(1, 3, "HTTP 400: bad")]
