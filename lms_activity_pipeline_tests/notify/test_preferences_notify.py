"""Mentor preferences and rules end to end: LMS -> ingest run -> outbox -> notify run -> Zulip test server.

Real parts: SQLite and PostgreSQL warehouses, Dagster runs, the official ``zulip`` client against
:class:`FakeZulip`; two notify runs at once on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from lms_activity_pipeline import cli
from lms_activity_pipeline.defs.alerts.checks import notification_health
from lms_activity_pipeline.defs.notify.ops import zulip_setup
from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES
from lms_activity_pipeline.domain.messages import FOOTER, URGENT_MARK
from lms_activity_pipeline.domain.preferences import Preference, QuietHours
from lms_activity_pipeline.lms.reader import LMSReader
from lms_activity_pipeline.notify.notifier import Notifier
from lms_activity_pipeline.notify.policy import NotifyPolicy
from lms_activity_pipeline.notify.request import NotifyRequest, why_no_run
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.health import outbox_health as raw_outbox_health
from lms_activity_pipeline.warehouse.preferences import PreferenceStore
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip
from lms_activity_pipeline_tests.support.notify_helpers import (
    add_mentors,
    ago,
    fast_zulip,
    recent_days,
    recent_school,
)
from lms_activity_pipeline_tests.support.pipeline import Pipeline, op_metadata

RULES = """\
rules:
  - name: passes are urgent
    when: {event_types: [exam_passed]}
    urgent: true
  - name: no content starts
    when: {event_types: [content_started]}
    notify: false
  - name: failures are urgent
    when: {event_types: [exam_failed], max_score_pct: 55}
    urgent: true
"""


def school(backend: Backend, server: FakeZulip, **env: str) -> tuple[Pipeline, dict[int, int], PreferenceStore]:
    """The recent school (mentor 10 also mentors carol now), ingested; nothing sent yet."""
    recent_school(backend.lms_url).assign(6, 3, 10, ago(100)).write()
    zulip_ids = add_mentors(server)
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(server)}, **env)
    pipe.ingest(*recent_days())
    return pipe, zulip_ids, PreferenceStore(pipe.warehouse.engine)


def statuses(pipe: Pipeline, mentor_id: int) -> dict[str, tuple[str, str | None]]:
    log = pipe.log_rows().query(f"mentor_id == {mentor_id}")
    return {
        r.event_key: (r.status, r.error_message if isinstance(r.error_message, str) else None) for r in log.itertuples()
    }


def set_last_digest(pipe: Pipeline, mentor_id: int, at: dt.datetime) -> None:
    pipe.execute(wh.mentor_digest_state.insert().values(mentor_id=mentor_id, last_digest_at=at))


def test_daily_is_held_then_sent_once_as_one_digest_when_the_send_hour_is_now(
    backend: Backend, fake_zulip: FakeZulip
) -> None:
    pipe, zulip_ids, store = school(backend, fake_zulip)
    now = dt.datetime.now(dt.UTC)
    later_hour = (now.hour + 3) % 24
    store.put(Preference(11, frequency="daily", send_hour=later_hour), now)
    set_last_digest(pipe, 11, now - dt.timedelta(hours=2))  # yesterday's digest slot is behind us
    # Notify runs whose age limit (1 h) the 2-3 h old events have passed: held pairs are not skipped for age.
    aged = Pipeline(backend, pipe.instance, resources={"zulip": fast_zulip(fake_zulip)}, LMS_NOTIFY_MAX_AGE_HOURS="1")

    meta = op_metadata(aged.notify())
    assert fake_zulip.messages_to(zulip_ids[11]) == []
    assert {s for s, _ in statuses(pipe, 11).values()} == {"pending"}
    assert meta["open_pairs_held_by_preference"] == 3
    assert "3 held by mentors' preferences (the next due at" in meta["open_pairs"]
    assert meta["next_due_at"].startswith(f"{(now + dt.timedelta(hours=3)).date().isoformat()}T{later_hour:02d}:00")
    # bob's other mentor (immediate) is past the age limit as before
    assert set(statuses(pipe, 12).values()) == {("skipped", "event older than LMS_NOTIFY_MAX_AGE_HOURS=1 when sending")}
    again = op_metadata(aged.notify())
    assert again["sent"] == 0 and fake_zulip.messages_to(zulip_ids[11]) == []
    # what the sensor and the schedule ask: held pairs do not make a run due
    why = why_no_run(
        pipe.warehouse.outbox(),
        enabled=True,
        event_types=ALL_EVENT_TYPES,
        max_age_hours=1,
        now=now,
        policy=NotifyPolicy(),
    )
    assert why is not None and why.startswith("nothing due: 3 pairs still open: 3 held by mentors' preferences")

    # The mentor moves the send hour to the current hour: the waiting pairs are due now, as one digest.
    store.put(Preference(11, frequency="daily", send_hour=now.hour), now)
    op_metadata(aged.notify())
    [digest] = fake_zulip.messages_to(zulip_ids[11])
    assert "📬 **LMS activity digest**: 3 events from 1 student, since " in digest.content
    assert digest.content.endswith(FOOTER)
    log = pipe.log_rows().query("mentor_id == 11")
    assert set(log["status"]) == {"sent"} and set(log["notification_message_id"]) == {digest.id}
    op_metadata(aged.notify())
    assert len(fake_zulip.messages_to(zulip_ids[11])) == 1


def test_off_for_one_student_skips_only_that_student(backend: Backend, fake_zulip: FakeZulip) -> None:
    pipe, zulip_ids, store = school(backend, fake_zulip)
    store.put(Preference(10, "student", 3, frequency="off"), dt.datetime.now(dt.UTC))  # carol, for mentor 10
    op_metadata(pipe.notify())
    mentor_10 = statuses(pipe, 10)
    assert {k: v for k, v in mentor_10.items() if k.startswith("content:")} == {
        "content:1:content_started": ("skipped", "muted by preference"),
        "content:1:content_watched": ("skipped", "muted by preference"),
        "content:1:content_completed": ("skipped", "muted by preference"),
    }
    assert {s for k, (s, _) in mentor_10.items() if k.startswith("exam:")} == {"sent"}  # alice's
    assert {s for s, _ in statuses(pipe, 13).values()} == {"sent"}  # carol's other mentor
    [digest] = fake_zulip.messages_to(zulip_ids[10])
    assert "Alice Liddell" in digest.content and "Carol Danvers" not in digest.content


def test_quiet_hours_hold_and_an_urgent_rule_passes_through(
    backend: Backend, fake_zulip: FakeZulip, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    pipe, zulip_ids, store = school(backend, fake_zulip, LMS_NOTIFY_RULES=str(rules))
    now = dt.datetime.now(dt.UTC)
    quiet = QuietHours(
        (now - dt.timedelta(hours=1)).time().replace(second=0, microsecond=0),
        (now + dt.timedelta(hours=2)).time().replace(second=0, microsecond=0),
    )
    store.put(Preference(10, quiet_hours=quiet), now)
    store.put(Preference(11, frequency="off"), now)  # muted, but an urgent rule still reaches them

    meta = op_metadata(pipe.notify())
    assert "passes are urgent" in meta["notification_policy"] and "no content starts" in meta["notification_policy"]
    [urgent] = fake_zulip.messages_to(zulip_ids[10])
    assert urgent.content.startswith(f"{URGENT_MARK} · ✅ **Alice Liddell** passed the exam")
    mentor_10 = statuses(pipe, 10)
    assert mentor_10["exam:1:exam_passed"][0] == "sent"
    assert mentor_10["exam:1:exam_started"] == ("pending", None)  # held until the quiet hours end
    assert mentor_10["content:1:content_watched"] == ("pending", None)
    skipped = ("skipped", "rule 'no content starts': notify: false")
    assert (
        mentor_10["content:1:content_started"] == skipped and statuses(pipe, 13)["content:1:content_started"] == skipped
    )
    assert meta["open_pairs_held_by_preference"] == 4
    bob = statuses(pipe, 11)
    assert bob["exam:2:exam_failed"][0] == "sent"
    assert bob["exam:2:exam_started"] == bob["exam:2:exam_completed"] == ("skipped", "muted by preference")
    [failed] = fake_zulip.messages_to(zulip_ids[11])
    assert failed.content.startswith(f"{URGENT_MARK} · ❌ **Bob Stone** failed the exam")


def test_a_bad_rules_file_stops_every_entry_point_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: typo\n    when: {event_type: [exam_failed]}\n    urgent: true\n")
    monkeypatch.setenv("LMS_NOTIFY_RULES", str(rules))
    monkeypatch.setenv("LMS_HOME", str(tmp_path))
    assert cli.main(["prefs", "show"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"lms-activity: configuration error: LMS_NOTIFY_RULES={str(rules)!r}: rule 1 ('typo'): unknown field "
        "'when.event_type' (known: event_types, courses, activities, min_score_pct, max_score_pct, min_failures_in_row)"
    )


def test_two_concurrent_runs_never_split_or_duplicate_a_digest(pg_databases, fake_zulip: FakeZulip) -> None:
    backend = Backend("postgresql", pg_databases.create("lms_src"), pg_databases.create("lms_wh"))
    pipe, zulip_ids, store = school(backend, fake_zulip)
    now = dt.datetime.now(dt.UTC)
    for mentor_id in zulip_ids:
        store.put(Preference(mentor_id, frequency="daily", send_hour=now.hour), now)
    outbox = pipe.warehouse.outbox()
    setup = zulip_setup(fast_zulip(fake_zulip))
    request = NotifyRequest(policy=NotifyPolicy(default_frequency="immediate"))
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            notifier = Notifier(outbox, LMSReader(backend.lms_url).users, setup, run_id=name, log=_Quiet())
            barrier.wait()
            notifier.run(request)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"run-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    log = pipe.log_rows()
    assert set(log["status"]) == {"sent"}
    for mentor_id, zulip_id in zulip_ids.items():
        messages = fake_zulip.messages_to(zulip_id)
        assert len(messages) == 1, mentor_id  # one digest each: never split, never twice
        assert set(log.query(f"mentor_id == {mentor_id}")["notification_message_id"]) == {messages[0].id}
    with pipe.warehouse.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(wh.mentor_digest_state)).scalar() == 4


class _Quiet:
    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def test_second_failure_in_a_row_is_urgent_through_a_daily_preference(
    backend: Backend, fake_zulip: FakeZulip, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - name: second failure is urgent\n"
        "    when: {event_types: [exam_failed], min_failures_in_row: 2}\n    urgent: true\n"
    )
    lms = recent_school(backend.lms_url)
    lms.attempt(3, 2, 201, "graded", ago(1.5), submitted_at=ago(1.2), graded_at=ago(1), score=40).write()
    zulip_ids = add_mentors(fake_zulip)
    pipe = Pipeline(
        backend,
        resources={"zulip": fast_zulip(fake_zulip)},
        LMS_NOTIFY_RULES=str(rules),
        LMS_NOTIFY_DEFAULT_FREQUENCY="daily",
    )
    pipe.ingest(*recent_days())
    now = dt.datetime.now(dt.UTC)
    for mentor_id in zulip_ids:  # every mentor's daily digest just went out: the next one is due tomorrow
        set_last_digest(pipe, mentor_id, now)
    meta = op_metadata(pipe.notify())
    bob = statuses(pipe, 11)
    assert bob["exam:3:exam_failed"][0] == "sent" and bob["exam:2:exam_failed"] == ("pending", None)
    [urgent] = fake_zulip.messages_to(zulip_ids[11])
    assert urgent.content.startswith(f"{URGENT_MARK} · ❌ **Bob Stone** failed the exam **Final exam** (attempt 2)")
    assert meta["sent"] == 2  # bob's two mentors; everything else waits for the daily digest
    assert meta["open_pairs_held_by_preference"] == meta["open_pairs_left"]


def test_stats_show_held_pairs_with_their_due_time(
    tmp_path: Path, fake_zulip: FakeZulip, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = Backend("sqlite", f"sqlite:///{tmp_path / 'lms.sqlite3'}", f"sqlite:///{tmp_path / 'wh.sqlite3'}")
    _, _, store = school(backend, fake_zulip)
    now = dt.datetime.now(dt.UTC)
    store.put(Preference(13, snooze_until=(now + dt.timedelta(days=3)).date()), now)
    home = tmp_path / "dagster_home"
    home.mkdir()
    for name, value in {
        "LMS_DATABASE_URL": backend.lms_url,
        "LMS_WAREHOUSE_URL": backend.warehouse_url,
        "LMS_HOME": str(tmp_path / "lms_home"),
        "DAGSTER_HOME": str(home),
    }.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["monitor", "--stats"]) == 0
    out = capsys.readouterr().out
    due = (now + dt.timedelta(days=3)).date().isoformat()
    assert "3 held by mentors' preferences (the next due at " + due + " 00:00 UTC)" in out


def test_pairs_held_by_a_preference_are_no_backlog_until_their_digest_is_due(
    backend: Backend, fake_zulip: FakeZulip
) -> None:
    """The backlog the alerts and the ``notification_backlog`` check measure counts pairs due now, from when
    they became due: a pair waiting for its mentor's daily digest is not a backlog."""
    pipe, _, store = school(backend, fake_zulip)
    now = dt.datetime.now(dt.UTC)
    slot = now.replace(minute=0, second=0, microsecond=0)  # today's send hour (UTC) has just passed
    mentors = sorted(set(pipe.log_rows()["mentor_id"].astype(int)))
    pipe.execute(wh.lms_event_log.update().values(created_at=now - dt.timedelta(hours=3)))
    settings, warehouse = pipe.defs.resources["settings"], pipe.defs.resources["warehouse"]
    for mentor in mentors:  # digests later today; the last one went out 5 minutes ago
        store.put(Preference(mentor, frequency="daily", send_hour=(now.hour + 3) % 24), now)
        set_last_digest(pipe, mentor, now - dt.timedelta(minutes=5))
    held = notification_health(warehouse, settings, now)
    assert (held.pending, held.oldest_pending_at) == (0, None)
    assert raw_outbox_health(pipe.warehouse.engine, now).pending > 0  # what the outbox holds: pending pairs

    for mentor in mentors:  # the digest hour is now, yesterday's went out: due since the hour began
        store.put(Preference(mentor, frequency="daily", send_hour=now.hour), now)
    pipe.execute(
        wh.mentor_digest_state.update().values(last_digest_at=slot - dt.timedelta(hours=24) + dt.timedelta(minutes=5))
    )
    due = notification_health(warehouse, settings, now)
    assert due.pending == len(pipe.log_rows()) and due.oldest_pending_at == slot
    assert due.pending_minutes(now) < 60  # not yet a backlog at LMS_ALERT_BACKLOG_MINUTES=60
