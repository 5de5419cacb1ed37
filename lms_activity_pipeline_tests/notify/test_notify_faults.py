"""Notifications when things go wrong: Zulip down, timeouts, refusals, switches, stale events, secrets."""

from __future__ import annotations

import datetime as dt
import time

import dagster as dg
import pytest

from lms_activity_pipeline.defs.resources import resources_for
from lms_activity_pipeline.notify.zulip_gateway import content_digest
from lms_activity_pipeline.settings import load_settings
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip
from lms_activity_pipeline_tests.support.notify_helpers import (
    add_mentors,
    ago,
    email,
    fast_zulip,
    recent_days,
    recent_school,
)
from lms_activity_pipeline_tests.support.pipeline import Pipeline, op_metadata


@pytest.fixture
def sqlite_backend(tmp_path) -> Backend:
    return Backend("sqlite", f"sqlite:///{tmp_path / 'lms.sqlite3'}", f"sqlite:///{tmp_path / 'warehouse.sqlite3'}")


def school(backend: Backend, zulip: dg.ConfigurableResource, **env: str) -> Pipeline:
    recent_school(backend.lms_url)
    pipe = Pipeline(backend, resources={"zulip": zulip}, **env)
    pipe.ingest(*recent_days())
    return pipe


def statuses(pipe: Pipeline) -> dict[int, list[str]]:
    """Statuses per LMS mentor id."""
    return {m: sorted(g["status"]) for m, g in pipe.log_rows().groupby("mentor_id")}


def test_zulip_down_at_start_is_recorded_then_sent_when_back(backend: Backend, fake_zulip: FakeZulip) -> None:
    pipe = school(backend, fast_zulip(fake_zulip, site=FakeZulip.refused_url()))  # nothing listens there
    result = pipe.notify()
    meta = op_metadata(result)
    assert result.success  # a recorded failure, not a crash
    assert meta["failed"] == 9 and "3 mentors in a row failed on server" in meta["stopped_early"]
    log = pipe.log_rows()
    failed = log[log["status"] == "failed"]
    assert (
        failed["error_message"]
        .str.startswith("Zulip user lookup failed: gave up after 3 attempt(s): Zulip unreachable")
        .all()
    )
    assert set(failed["attempts"]) == {3} and not failed["delivery_uncertain"].any()
    assert (log["status"] == "pending").sum() == 3  # the mentor after the breaker tripped was never claimed

    zulip_ids = add_mentors(fake_zulip)
    back = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip)})  # same warehouse, server up
    meta = op_metadata(back.notify())  # an automatic run retries certain failures
    assert meta["sent"] == 12 and meta["open_pairs_left"] == 0
    assert sorted(r for m in fake_zulip.messages for r in m.recipient_ids) == sorted(zulip_ids.values())


def wait_for_messages(server: FakeZulip, count: int) -> None:
    """Until the fake has stored ``count`` messages (a timed-out request is still being answered)."""
    deadline = time.monotonic() + 5
    while len(server.messages) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_timed_out_send_is_looked_up_on_zulip_and_never_resent(
    sqlite_backend: Backend, fake_zulip: FakeZulip
) -> None:
    zulip_ids = add_mentors(fake_zulip)
    pipe = school(sqlite_backend, fast_zulip(fake_zulip, request_timeout_seconds=0.3))
    fake_zulip.fail_next("messages", 200, delay=1.0)  # processed, but too late for the sender
    meta = op_metadata(pipe.notify(event_types=("exam_passed",)))
    assert meta["failed"] == 1 and meta["sent"] == 0
    [row] = pipe.log_rows().query("status == 'failed'").to_dict("records")
    assert row["delivery_uncertain"] and row["attempts"] == 1 and row["delivery_digest"]
    assert row["error_message"] == "uncertain delivery (Zulip is asked before any resend): no reply within 0.3 s"
    assert len(fake_zulip.requests_to("messages")) == 1  # no resend in the same run

    # Too recent to tell (the server may still be working on it): neither kind of run touches it.
    assert op_metadata(pipe.notify(event_types=("exam_passed",)))["sent"] == 0
    assert op_metadata(pipe.notify(event_types=("exam_passed",), retry_all_failed=True))["sent"] == 0
    wait_for_messages(fake_zulip, 1)
    [stored] = fake_zulip.messages_to(zulip_ids[10])

    # Old enough: the next automatic run asks Zulip, finds the message and records it, sending nothing.
    meta = op_metadata(pipe.notify(event_types=("exam_passed",), settle_uncertain_after_seconds=0))
    assert (meta["uncertain_found_on_zulip"], meta["sent"], meta["open_pairs_left"]) == (1, 1, 0)
    [row] = pipe.log_rows().query("event_key == 'exam:1:exam_passed'").to_dict("records")
    assert row["status"] == "sent" and row["notification_message_id"] == stored.id and not row["delivery_uncertain"]
    assert len(fake_zulip.messages) == 1 and len(fake_zulip.requests_to("messages", "POST")) == 1


def test_a_timed_out_send_that_never_arrived_is_resent_once(sqlite_backend: Backend, fake_zulip: FakeZulip) -> None:
    zulip_ids = add_mentors(fake_zulip)
    pipe = school(sqlite_backend, fast_zulip(fake_zulip, request_timeout_seconds=0.3))
    fake_zulip.fail_next("messages", 504, delay=0.6, method="POST")  # a proxy gives up; nothing stored
    assert op_metadata(pipe.notify(event_types=("exam_passed",)))["failed"] == 1
    time.sleep(0.7)  # the fake has answered its 504 by now
    meta = op_metadata(pipe.notify(event_types=("exam_passed",), settle_uncertain_after_seconds=0))
    assert (meta["uncertain_not_delivered"], meta["sent"], meta["failed"]) == (1, 1, 0)
    [message] = fake_zulip.messages_to(zulip_ids[10])
    [row] = pipe.log_rows().query("event_key == 'exam:1:exam_passed'").to_dict("records")
    assert row["status"] == "sent" and row["notification_message_id"] == message.id and row["attempts"] == 2


def test_an_outage_stops_the_run_and_nothing_is_sent_twice_after_it(backend: Backend, fake_zulip: FakeZulip) -> None:
    """Zulip answers 503 to everything: sends fail, and so do the checks whether they were stored."""
    zulip_ids = add_mentors(fake_zulip)
    pipe = school(backend, fast_zulip(fake_zulip))
    fake_zulip.fail_next("messages", 503, times=1000)  # user look-ups still work
    meta = op_metadata(pipe.notify())
    assert "3 mentors in a row failed on server" in meta["stopped_early"]
    assert len(fake_zulip.requests_to("messages", "POST")) == 3  # one per mentor, then the run stopped
    log = pipe.log_rows()
    assert (log["delivery_uncertain"]).sum() == meta["failed"] and (log["status"] == "pending").any()

    fake_zulip.clear_faults()
    meta = op_metadata(pipe.notify(settle_uncertain_after_seconds=0))
    assert meta["uncertain_not_delivered"] > 0 and meta["open_pairs_left"] == 0
    log = pipe.log_rows()
    assert set(log["status"]) == {"sent"}
    recipients = [m.recipient_ids[0] for m in fake_zulip.messages]
    assert sorted(recipients) == sorted(set(recipients)) == sorted(zulip_ids.values())  # one message each


def test_server_errors_are_retried_bounded_and_the_next_mentor_goes_on(
    sqlite_backend: Backend, fake_zulip: FakeZulip
) -> None:
    zulip_ids = add_mentors(fake_zulip)
    pipe = school(sqlite_backend, fast_zulip(fake_zulip))
    fake_zulip.fail_next("messages", 503, times=3, method="POST")
    meta = op_metadata(pipe.notify(event_types=("exam_failed",)))  # mentors 11 and 12
    assert (meta["sent"], meta["failed"]) == (1, 1)
    failed = pipe.log_rows().query("status == 'failed'").iloc[0]
    assert (
        failed["error_message"] == "gave up after 3 attempt(s): HTTP 503: not a Zulip API reply (text/html)"
        and failed["attempts"] == 3
    )
    assert [r.status for r in fake_zulip.requests_to("messages", "POST")] == [503, 503, 503, 200]
    assert len(fake_zulip.requests_to("messages", "GET")) == 3  # before each resend: was it stored after all?
    assert len(fake_zulip.messages) == 1
    assert op_metadata(pipe.notify(event_types=("exam_failed",)))["sent"] == 1  # retried by the next automatic run
    assert {m.recipient_ids[0] for m in fake_zulip.messages} == {zulip_ids[11], zulip_ids[12]}


def test_a_message_zulip_stored_despite_a_5xx_is_not_sent_again(backend: Backend, fake_zulip: FakeZulip) -> None:
    zulip_ids = add_mentors(fake_zulip)
    pipe = school(backend, fast_zulip(fake_zulip))
    fake_zulip.fail_next("messages", 502, store_anyway=True, method="POST")  # stored, then the proxy failed
    result = pipe.notify(event_types=("exam_passed",))
    meta = op_metadata(result)
    assert (meta["sent"], meta["failed"]) == (1, 0)
    [message] = fake_zulip.messages_to(zulip_ids[10])  # exactly once
    [row] = pipe.log_rows().query("status == 'sent'").to_dict("records")
    assert row["notification_message_id"] == message.id and row["attempts"] == 1
    assert [r.status for r in fake_zulip.requests_to("messages")] == [502, 200]  # POST, then the GET that found it
    assert any("stored by Zulip despite" in e.message for e in pipe.instance.all_logs(result.run_id))


@pytest.mark.parametrize("status", [200, 408, 502])
def test_a_proxy_page_after_zulip_stored_the_message_is_looked_up_not_resent(
    backend: Backend, fake_zulip: FakeZulip, status: int
) -> None:
    """A WAF or proxy answers ``<html>`` (even with 200) after Zulip stored the DM: found, recorded, never resent."""
    zulip_ids = add_mentors(fake_zulip)
    pipe = school(backend, fast_zulip(fake_zulip))
    fake_zulip.fail_next("messages", status, html=True, store_anyway=True, method="POST")
    result = pipe.notify(event_types=("exam_passed",))
    meta = op_metadata(result)
    assert (meta["sent"], meta["failed"]) == (1, 0)
    [message] = fake_zulip.messages_to(zulip_ids[10])  # exactly one DM
    [row] = pipe.log_rows().query("event_key == 'exam:1:exam_passed'").to_dict("records")
    assert (row["status"], row["notification_message_id"], row["attempts"]) == ("sent", message.id, 1)
    assert [r.status for r in fake_zulip.requests_to("messages")] == [status, 200]  # POST, then the GET that found it
    logged = [e.message for e in pipe.instance.all_logs(result.run_id)]
    assert any(f'stored by Zulip despite "HTTP {status}: not a Zulip API reply (text/html)"' in m for m in logged)
    assert op_metadata(pipe.notify(event_types=("exam_passed",)))["sent"] == 0
    assert len(fake_zulip.messages) == 1


def test_a_server_clock_far_off_ours_does_not_hide_a_stored_message(
    backend: Backend, isolated_zulip_env: object
) -> None:
    """Zulip's clock is 10 minutes behind ours: the DM it stored before a 502 is still recognised, not resent."""
    with FakeZulip(clock_offset=-600) as server:
        zulip_ids = add_mentors(server, 10)
        pipe = school(backend, fast_zulip(server))
        server.fail_next("messages", 502, store_anyway=True, method="POST")
        meta = op_metadata(pipe.notify(event_types=("exam_passed",)))
        [message] = server.messages_to(zulip_ids[10])
        [row] = pipe.log_rows().query("event_key == 'exam:1:exam_passed'").to_dict("records")
        assert (meta["sent"], row["notification_message_id"], len(server.requests_to("messages", "POST"))) == (
            1,
            message.id,
            1,
        )


def test_a_proxy_page_before_zulip_saw_the_message_is_resent_after_the_lookup(
    sqlite_backend: Backend, fake_zulip: FakeZulip
) -> None:
    zulip_ids = add_mentors(fake_zulip)
    pipe = school(sqlite_backend, fast_zulip(fake_zulip))
    fake_zulip.fail_next("messages", 408, html=True, method="POST")  # the proxy gave up; Zulip never saw it
    meta = op_metadata(pipe.notify(event_types=("exam_passed",)))
    assert (meta["sent"], meta["failed"]) == (1, 0)
    [message] = fake_zulip.messages_to(zulip_ids[10])
    assert [(r.method, r.status) for r in fake_zulip.requests_to("messages")] == [
        ("POST", 408),
        ("GET", 200),
        ("POST", 200),
    ]
    [row] = pipe.log_rows().query("event_key == 'exam:1:exam_passed'").to_dict("records")
    assert (row["status"], row["notification_message_id"], row["attempts"]) == ("sent", message.id, 2)


def test_a_proxy_page_for_a_user_lookup_is_retried_not_taken_for_no_such_user(
    sqlite_backend: Backend, fake_zulip: FakeZulip
) -> None:
    """A 400 or 200 HTML page is not Zulip's "No such user": the mentor is not cached as unknown and skipped."""
    zulip_ids = add_mentors(fake_zulip)
    pipe = school(sqlite_backend, fast_zulip(fake_zulip))
    fake_zulip.fail_next("users", 400, html=True)
    fake_zulip.fail_next("users", 200, body={"ok": True})  # JSON, but not Zulip's
    meta = op_metadata(pipe.notify(event_types=("exam_passed",)))
    assert (meta["sent"], meta["skipped"], meta["zulip_user_lookups"]) == (1, 0, 1)
    assert [r.status for r in fake_zulip.requests_to("users")] == [400, 200, 200]
    assert len(fake_zulip.messages_to(zulip_ids[10])) == 1


def test_a_5xx_that_cannot_be_checked_is_uncertain(sqlite_backend: Backend, fake_zulip: FakeZulip) -> None:
    zulip_ids = add_mentors(fake_zulip)
    pipe = school(sqlite_backend, fast_zulip(fake_zulip))
    fake_zulip.fail_next("messages", 502, store_anyway=True, method="POST")
    fake_zulip.fail_next("messages", 500, times=3, method="GET")  # and the server cannot say whether
    meta = op_metadata(pipe.notify(event_types=("exam_passed",)))
    assert (meta["sent"], meta["failed"]) == (0, 1)
    [row] = pipe.log_rows().query("status == 'failed'").to_dict("records")
    assert row["delivery_uncertain"]
    assert row["error_message"] == (
        "uncertain delivery (Zulip is asked before any resend): HTTP 502: not a Zulip API reply (text/html); "
        "could not check whether it was stored: gave up after 3 attempt(s): HTTP 500 BAD_REQUEST: Internal server error"
    )
    assert op_metadata(pipe.notify(event_types=("exam_passed",)))["sent"] == 0  # too recent to ask about
    meta = op_metadata(pipe.notify(event_types=("exam_passed",), settle_uncertain_after_seconds=0))
    assert (meta["uncertain_found_on_zulip"], meta["sent"]) == (1, 1)  # it had arrived: recorded, not resent
    assert len(fake_zulip.messages_to(zulip_ids[10])) == 1
    assert len(fake_zulip.requests_to("messages", "POST")) == 1


def test_a_dropped_connection_after_sending_is_checked_but_a_refused_one_is_not(fake_zulip: FakeZulip) -> None:
    from lms_activity_pipeline.notify.zulip_gateway import ZulipGateway

    options = {"site": fake_zulip.url, "email": fake_zulip.email, "api_key": fake_zulip.api_key}
    gateway = ZulipGateway(options, timeout=5)
    mentor = fake_zulip.add_user("m@example.edu").user_id
    assert gateway.send_direct([mentor], "hello").ok
    found = gateway.find_direct([mentor], content_digest("hello\n"), 0)
    assert found.ok and found.body["id"] == fake_zulip.messages[0].id
    assert gateway.find_direct([mentor], content_digest("something else"), 0).body.get("id") is None
    fake_zulip.stop()  # the client is connected: now the connection is refused
    refused = gateway.send_direct([mentor], "hello again")
    assert refused.kind == "retryable" and not refused.maybe_done  # nothing went out: resending is safe


def test_recipient_deactivated_after_caching_is_skipped(sqlite_backend: Backend, fake_zulip: FakeZulip) -> None:
    add_mentors(fake_zulip)
    pipe = school(sqlite_backend, fast_zulip(fake_zulip))
    pipe.notify(event_types=("exam_started",))  # caches mentor 10 as active
    fake_zulip.deactivate_user(email(10))
    meta = op_metadata(pipe.notify(event_types=("exam_passed",)))  # the send is refused; Zulip is asked again
    assert (meta["skipped"], meta["failed"]) == (1, 0)
    row = pipe.log_rows().query("event_key == 'exam:1:exam_passed'").iloc[0]
    assert row["status"] == "skipped" and row["error_message"] == f"Zulip user {email(10)} is deactivated"


def test_disabled_sends_nothing_and_keeps_pairs_pending(sqlite_backend: Backend, fake_zulip: FakeZulip) -> None:
    add_mentors(fake_zulip)
    pipe = school(sqlite_backend, fast_zulip(fake_zulip), LMS_NOTIFY_MENTORS_ENABLED="false")
    result = pipe.notify()
    meta = op_metadata(result)
    assert meta["mode"] == "disabled" and meta["open_pairs_left"] == 12 and meta["sent"] == 0
    assert set(pipe.log_rows()["status"]) == {"pending"} and fake_zulip.requests == []
    logged = [e.message for e in pipe.instance.all_logs(result.run_id)]
    assert any("Mentor notifications are disabled (LMS_NOTIFY_MENTORS_ENABLED=false)" in m for m in logged)


def test_events_too_old_when_sending_are_skipped(sqlite_backend: Backend, fake_zulip: FakeZulip) -> None:
    add_mentors(fake_zulip)
    school(sqlite_backend, fast_zulip(fake_zulip))  # enqueued under the 24 h default
    later = Pipeline(sqlite_backend, resources={"zulip": fast_zulip(fake_zulip)}, LMS_NOTIFY_MAX_AGE_HOURS="1")
    meta = op_metadata(later.notify())
    assert (meta["skipped"], meta["sent"]) == (12, 0) and fake_zulip.requests == []
    reasons = set(later.log_rows()["error_message"])
    assert reasons == {"event older than LMS_NOTIFY_MAX_AGE_HOURS=1 when sending"}


def test_monitored_types_limit_what_is_sent(sqlite_backend: Backend, fake_zulip: FakeZulip) -> None:
    add_mentors(fake_zulip)
    pipe = school(sqlite_backend, fast_zulip(fake_zulip))  # every type enqueued
    narrow = Pipeline(
        sqlite_backend, resources={"zulip": fast_zulip(fake_zulip)}, LMS_EVENT_TYPES_TO_MONITOR="exam_failed"
    )
    assert op_metadata(narrow.notify())["sent"] == 2
    assert op_metadata(narrow.notify(event_types=("exam_passed",)))["mode"] == "no event types selected"
    assert statuses(pipe)[13] == ["pending"] * 3


def test_old_servers_get_private_messages(sqlite_backend: Backend, isolated_zulip_env: object) -> None:
    with FakeZulip(feature_level=150) as server:
        add_mentors(server, 10)
        pipe = school(sqlite_backend, fast_zulip(server))
        assert op_metadata(pipe.notify(event_types=("exam_passed",)))["sent"] == 1
        assert [m.type for m in server.messages] == ["private"]


def test_api_key_never_reaches_logs_or_metadata(sqlite_backend: Backend, fake_zulip: FakeZulip) -> None:
    add_mentors(fake_zulip)
    pipe = school(sqlite_backend, fast_zulip(fake_zulip))
    fake_zulip.fail_next("messages", 500)
    results = [pipe.notify(event_types=(t,)) for t in ("exam_passed", "exam_failed")]
    for result in results:
        texts = [e.message for e in pipe.instance.all_logs(result.run_id)]
        texts += [str(v) for v in op_metadata(result).values()]
        assert texts and not [t for t in texts if fake_zulip.api_key in t]
    assert fake_zulip.api_key not in str(pipe.log_rows().to_dict("records"))
    resource = fast_zulip(fake_zulip)  # as a value (not an EnvVar), e.g. inside `lms-activity monitor`
    assert fake_zulip.api_key not in repr(resource) + str(resource) and "api_key='********'" in repr(resource)


def test_partial_zulip_configuration_is_one_clear_error(sqlite_backend: Backend) -> None:
    pipe = school(sqlite_backend, fast_zulip(None, site="http://127.0.0.1:9"))
    result = pipe.defs.resolve_job_def("notify_mentors_job").execute_in_process(
        instance=pipe.instance, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "ConfigError: ZULIP_EMAIL, ZULIP_API_KEY not set" in failure.event_specific_data.error.to_string()
    assert set(pipe.log_rows()["status"]) == {"pending"}


def test_sensor_and_schedule_launch_the_notify_job(sqlite_backend: Backend) -> None:
    pipe = school(sqlite_backend, fast_zulip(None))
    [ingest_run] = pipe.instance.get_runs()
    sensor = pipe.defs.resolve_sensor_def("notify_mentors_after_ingest")

    def after(run: dg.DagsterRun):
        [success] = [
            e
            for e in pipe.instance.all_logs(run.run_id)
            if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_SUCCESS"
        ]
        return sensor(
            dg.build_run_status_sensor_context(
                sensor_name=sensor.name,
                dagster_event=success.dagster_event,
                dagster_instance=pipe.instance,
                dagster_run=run,
                resources=pipe.defs.resources,
            )
        )

    assert after(ingest_run).run_key == f"notify-after-{ingest_run.run_id}"
    # "Materialize" in the UI (or a UI backfill) runs the implicit asset job: it is followed too.
    ui_job = pipe.defs.resolve_implicit_global_asset_job_def()
    events = dg.AssetKey("lms_activity_events")
    ui_run = ui_job.execute_in_process(instance=pipe.instance, partition_key=recent_days()[1], asset_selection=[events])
    assert after(ui_run.dagster_run).run_key == f"notify-after-{ui_run.run_id}"
    raw_only = ui_job.execute_in_process(
        instance=pipe.instance, partition_key=recent_days()[1], asset_selection=[dg.AssetKey("raw_exam_attempts")]
    )
    assert isinstance(after(raw_only.dagster_run), dg.SkipReason)  # nothing enqueued, nothing to send
    assert isinstance(after(pipe.notify().dagster_run), dg.SkipReason)  # and never after its own runs
    assert sensor.job_name == "notify_mentors_job" and sensor.default_status == dg.DefaultSensorStatus.RUNNING
    schedule = pipe.defs.resolve_schedule_def("notify_mentors_retry_schedule")
    assert (schedule.job_name, schedule.cron_schedule) == ("notify_mentors_job", "*/10 * * * *")
    off = Pipeline(sqlite_backend, LMS_NOTIFY_MENTORS_ENABLED="false")
    assert off.defs.resolve_schedule_def(schedule.name).default_status == dg.DefaultScheduleStatus.STOPPED


def test_sensor_and_schedule_launch_a_notify_run_only_when_one_is_due(sqlite_backend: Backend) -> None:
    """The outbox's one definition of "due" decides: pairs to send, a stale claim to recover; else a skip."""
    pipe = school(sqlite_backend, fast_zulip(None))  # dry-run: every pair is final after one run
    schedule = pipe.defs.resolve_schedule_def("notify_mentors_retry_schedule")
    sensor = pipe.defs.resolve_sensor_def("notify_mentors_after_ingest")

    def tick() -> tuple[list[dg.RunRequest], str | None]:  # what a tick of the schedule does now
        with dg.build_schedule_context(instance=pipe.instance, resources=pipe.defs.resources) as context:
            data = schedule.evaluate_tick(context)
        return list(data.run_requests or []), data.skip_message

    def after(result: dg.ExecuteInProcessResult):
        [success] = [e for e in result.all_events if e.event_type_value == "PIPELINE_SUCCESS"]
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name,
            dagster_event=success,
            dagster_instance=pipe.instance,
            dagster_run=result.dagster_run,
            resources=pipe.defs.resources,
        )
        return sensor(context)

    [request], _ = tick()  # 12 pairs pending
    assert request.tags["lms/trigger"] == "schedule"
    assert op_metadata(pipe.notify())["dry_run"] == 12
    assert tick() == ([], "nothing due: 0 pairs still open")
    again = pipe.ingest(*recent_days())  # an ingest that enqueued nothing new
    assert after(again).skip_message == f"after run {again.run_id}: nothing due: 0 pairs still open"

    log = wh.lms_event_log
    stale = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    pipe.execute(log.update().where(log.c.id == 1).values(status="pending", claimed_by="dead:1", claimed_at=stale))
    assert len(tick()[0]) == 1 and after(again).run_key == f"notify-after-{again.run_id}"
    pipe.execute(log.update().where(log.c.id == 1).values(claimed_at=dt.datetime.now(dt.UTC)))  # a live run's
    assert tick() == ([], "nothing due: 1 pair still open: 1 claimed by a run in progress")


def test_zuliprc_from_zulip_config_and_secrets_stay_env_references(
    sqlite_backend: Backend,
    fake_zulip: FakeZulip,
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    zuliprc = tmp_path / "zuliprc"
    zuliprc.write_text(f"[api]\nemail={fake_zulip.email}\nkey={fake_zulip.api_key}\nsite={fake_zulip.url}\n")
    monkeypatch.setenv("ZULIP_CONFIG", str(zuliprc))
    add_mentors(fake_zulip, 10)
    recent_school(sqlite_backend.lms_url)
    pipe = Pipeline(sqlite_backend)  # resources from the environment, as in production
    pipe.ingest(*recent_days())
    meta = op_metadata(pipe.notify(event_types=("exam_passed",)))
    assert meta["sent"] == 1 and meta["zulip"] == f"Zulip bot from zuliprc {zuliprc}"

    monkeypatch.delenv("ZULIP_CONFIG")
    for name, value in (("ZULIP_SITE", fake_zulip.url), ("ZULIP_EMAIL", fake_zulip.email), ("ZULIP_API_KEY", "s3cret")):
        monkeypatch.setenv(name, value)
    settings = load_settings()  # the environment is read once, when the code location loads
    zulip = resources_for(settings)["zulip"]
    assert isinstance(zulip.api_key, dg.EnvVar) and zulip.api_key.env_var_name == "ZULIP_API_KEY"
    assert "s3cret" not in repr(zulip) and resources_for(settings, env_vars=False)["zulip"].api_key == "s3cret"


def test_bad_server_settings_reply_is_a_recorded_failure(sqlite_backend: Backend, fake_zulip: FakeZulip) -> None:
    add_mentors(fake_zulip)
    pipe = school(sqlite_backend, fast_zulip(fake_zulip))
    fake_zulip.fail_next("server_settings", 502, times=3)  # a proxy page instead of Zulip's JSON
    result = pipe.notify(event_types=("exam_passed",))
    assert result.success and op_metadata(result)["failed"] == 1
    error = pipe.log_rows().query("status == 'failed'")["error_message"].item()
    assert error == (
        "Zulip user lookup failed: gave up after 3 attempt(s): "
        "unexpected reply to GET /api/v1/server_settings (is it a Zulip server?)"
    )
    assert op_metadata(pipe.notify(event_types=("exam_passed",)))["sent"] == 1 and len(fake_zulip.messages) == 1


def test_bad_api_key_stops_the_run_early(sqlite_backend: Backend, fake_zulip: FakeZulip) -> None:
    add_mentors(fake_zulip)
    pipe = school(sqlite_backend, fast_zulip(fake_zulip, api_key="wrong-key"))
    meta = op_metadata(pipe.notify())
    assert meta["failed"] == 9 and "credential" in meta["stopped_early"]
    errors = set(pipe.log_rows().query("status == 'failed'")["error_message"])
    assert errors == {"Zulip user lookup failed: HTTP 401 INVALID_API_KEY: Invalid API key"}
    assert len(fake_zulip.requests_to("users")) == 3 and fake_zulip.messages == []  # no retries of a 401


def test_odd_rows_never_sink_the_batch(sqlite_backend: Backend, fake_zulip: FakeZulip) -> None:
    zulip_ids = add_mentors(fake_zulip, 10)
    pipe = school(sqlite_backend, fast_zulip(fake_zulip))
    events, log = wh.lms_activity_events, wh.lms_event_log
    odd = {"score": "n/a", "max_score": 0, "attempt_number": "two", "student_name": None, "progress_percent": []}
    pipe.execute(
        events.insert().values(
            event_id=900,
            event_key="exam:900:exam_failed",
            event_type="exam_failed",
            student_id=1,
            student_username="alice",
            timestamp=ago(1),
            activity_title=None,
            course_title=None,
            activity_metadata=odd,
        )
    )
    pipe.execute(log.insert().values([{"event_id": 900, "mentor_id": 10}, {"event_id": 900, "mentor_id": 99}]))
    meta = op_metadata(pipe.notify(event_types=("exam_failed", "exam_passed")))
    assert (meta["sent"], meta["skipped"], meta["failed"]) == (2, 3, 0)  # 11 and 12 are not on Zulip here
    [digest] = [m.content for m in fake_zulip.messages_to(zulip_ids[10])]
    assert "failed the exam **(untitled activity)**" in digest and "None" not in digest
    skipped = pipe.log_rows().query("mentor_id == 99").iloc[0]
    assert skipped["error_message"] == "mentor id 99 is not in the LMS Users table"
