"""What one notify run drains, what it leaves and why, and what counts as "due" for starting one."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from lms_activity_pipeline.domain.outbox import OutboxStatus
from lms_activity_pipeline.notify.notifier import MENTOR_PAGE
from lms_activity_pipeline.notify.zulip_gateway import ZulipGateway
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.outbox import Backlog, Selection
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder
from lms_activity_pipeline_tests.support.notify_helpers import add_mentors, ago, fast_zulip, recent_days, recent_school
from lms_activity_pipeline_tests.support.pipeline import Pipeline, op_metadata


def events_in(digest: str) -> int:
    """The events a digest says it carries (its lines fold an attempt's events into one)."""
    return int(digest.split("**LMS activity digest**: ", 1)[1].split(" event", 1)[0])


#: Over the 1,000 pairs one run used to take, and more mentors than one page.
BURST_MENTORS, EVENTS_EACH = MENTOR_PAGE + 10, 5


def burst_school(backend: Backend, server: FakeZulip) -> Pipeline:
    """A burst after an import: ``BURST_MENTORS`` students, each with their own mentor and 5 events
    (two articles started and completed, a third started): ``BURST_MENTORS * EVENTS_EACH`` pairs."""
    b = LMSBuilder(backend.lms_url).course(1, "Course")
    for a in range(1, 4):
        b.content(a, 1, f"Article {a}", "article")
    attempt = 0
    for m in range(BURST_MENTORS):
        mentor_id, student_id = 100_000 + m, m + 1
        b.user(mentor_id, f"mentor{m}", role="mentor").user(student_id, f"student{m}")
        b.assign(m + 1, student_id, mentor_id, ago(100))
        server.add_user(f"mentor{m}@example.edu")
        for a in (1, 2):  # started + completed: 2 events each
            attempt += 1
            b.content_attempt(attempt, student_id, a, "completed", ago(3), completed_at=ago(2), progress_percent=100)
        attempt += 1
        b.content_attempt(attempt, student_id, 3, "in_progress", ago(2), progress_percent=10)  # started: 1 event
    b.write()
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(server)})
    pipe.ingest(*recent_days())
    assert pipe.count(wh.lms_event_log) == BURST_MENTORS * EVENTS_EACH
    return pipe


def test_one_run_drains_a_burst_mentor_by_mentor(backend: Backend, isolated_zulip_env: object) -> None:
    """1,050 pairs of 210 mentors: one default run sends them all, one digest per mentor, none split."""
    with FakeZulip(rate_limit=None) as server:  # this test is about the run, not Zulip's limit
        pipe = burst_school(backend, server)
        meta = op_metadata(pipe.notify())
        assert (meta["sent"], meta["messages"], meta["mentors"]) == (
            BURST_MENTORS * EVENTS_EACH,
            BURST_MENTORS,
            BURST_MENTORS,
        )
        assert (meta["open_pairs_left"], meta["open_pairs"]) == (0, "0 pairs still open")
        recipients = [m.recipient_ids[0] for m in server.messages]
        assert len(recipients) == len(set(recipients)) == BURST_MENTORS  # each mentor one digest
        assert {events_in(m.content) for m in server.messages} == {EVENTS_EACH}
    log = pipe.log_rows()
    assert set(log["status"]) == {"sent"} and log["claimed_by"].isna().all()
    assert log.groupby("notification_message_id").size().eq(EVENTS_EACH).all()


def test_a_run_past_its_time_budget_starts_no_new_mentor_and_says_what_it_left(
    backend: Backend, fake_zulip: FakeZulip
) -> None:
    add_mentors(fake_zulip)
    recent_school(backend.lms_url)
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip)})
    pipe.ingest(*recent_days())
    result = pipe.notify(time_budget_minutes=1e-6)  # spent before the first mentor is done
    meta = op_metadata(result)
    assert meta["mentors"] == 1 and meta["stopped_early"] == "time budget of 1e-06 min reached after 1 mentor"
    assert meta["sent"] == 3 and len(fake_zulip.messages) == 1  # the first mentor is always finished
    assert (meta["open_pairs_left"], meta["open_pairs_takeable"], meta["open_pairs_takeable_mentors"]) == (9, 9, 3)
    assert meta["open_pairs"] == "9 pairs still open: 9 to send to 3 mentors"
    logged = [e.message for e in pipe.instance.all_logs(result.run_id)]
    assert f"Stopped early: {meta['stopped_early']}; left for the next run: {meta['open_pairs']}" in logged

    meta = op_metadata(pipe.notify())  # the next run takes the rest
    assert (meta["sent"], meta["open_pairs_left"]) == (9, 0) and "stopped_early" not in meta
    recipients = [m.recipient_ids[0] for m in fake_zulip.messages]
    assert len(recipients) == len(set(recipients)) == 4


def test_the_breaker_leaves_the_rest_counted_with_what_it_waits_for(backend: Backend, fake_zulip: FakeZulip) -> None:
    add_mentors(fake_zulip)
    recent_school(backend.lms_url)
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip)})
    pipe.ingest(*recent_days())
    fake_zulip.fail_next("messages", 503, times=1000)  # sends fail, and so do the look-ups whether they were stored
    meta = op_metadata(pipe.notify())
    assert meta["stopped_early"] == "3 mentors in a row failed on server, network or credential errors"
    uncertain, takeable = meta["failed"], 12 - meta["failed"]
    assert (meta["open_pairs_uncertain_waiting"], meta["open_pairs_takeable"], meta["open_pairs_left"]) == (
        uncertain,
        takeable,
        12,
    )
    assert meta["open_pairs"] == (
        f"12 pairs still open: {takeable} to send to 1 mentor; "
        f"{uncertain} of uncertain delivery, looked up on Zulip once 2 min old"
    )


def test_backlog_counts_every_open_pair_by_what_it_waits_for_and_due_means_a_run_would_act(backend: Backend) -> None:
    recent_school(backend.lms_url)
    pipe = Pipeline(backend)
    pipe.ingest(*recent_days())
    outbox, log = pipe.warehouse.outbox(), wh.lms_event_log
    now = dt.datetime.now(dt.UTC)
    timeout, settle = dt.timedelta(minutes=30), dt.timedelta(minutes=2)
    ids = {m: [p.log_id for p in outbox.takeable_pairs(Selection(), [m])] for m in (10, 11, 12, 13)}
    assert outbox.backlog(Selection(), now, timeout, settle) == Backlog(takeable=12, takeable_mentors=4)

    # Mentor 10: claimed by a live run. Mentor 11: claimed an hour ago, by a run that died while sending.
    outbox.claim(ids[10], Selection(), "live:1", now)
    outbox.claim(ids[11], Selection(), "dead:1", now - dt.timedelta(hours=1))
    outbox.mark_sending(ids[11], "dead:1", now - dt.timedelta(hours=1), "digest-11", 511)
    # Mentor 12: uncertain deliveries, one just sent, two long ago. Mentor 13: failed for good, and uncheckable.
    uncertain = {
        "status": OutboxStatus.FAILED,
        "delivery_uncertain": True,
        "delivery_digest": "d",
        "zulip_user_id": 512,
    }
    pipe.execute(log.update().where(log.c.id == ids[12][0]).values(**uncertain, delivery_attempted_at=now))
    pipe.execute(
        log.update()
        .where(log.c.id.in_(ids[12][1:]))
        .values(**uncertain, delivery_attempted_at=now - dt.timedelta(hours=1))
    )
    pipe.execute(log.update().where(log.c.id == ids[13][0]).values(status=OutboxStatus.FAILED, attempts=6))
    pipe.execute(log.update().where(log.c.id == ids[13][1]).values(status=OutboxStatus.FAILED, delivery_uncertain=True))

    backlog = outbox.backlog(Selection(), now, timeout, settle)
    assert backlog == Backlog(
        takeable=1, takeable_mentors=1, stale_claims=3, claimed=3, uncertain_due=2, uncertain_waiting=1, held=2
    )
    assert backlog.total == 12 and backlog.due
    # --process-pending takes what automatic runs hold; the types narrow everything.
    assert outbox.backlog(Selection(retry_all_failed=True), now, timeout, settle).takeable == 3
    assert outbox.backlog(Selection(("exam_failed",)), now, timeout, settle).total == 2  # bob's, to 11 and 12

    # Nothing to take and nothing old enough: pairs are open, yet no run is due.
    pipe.execute(log.update().where(log.c.id == ids[13][2]).values(status="sent"))
    pipe.execute(log.update().where(log.c.claimed_by == "dead:1").values(claimed_at=now))
    pipe.execute(
        log.update()
        .where(log.c.delivery_uncertain.is_(True), log.c.delivery_digest.is_not(None))
        .values(delivery_attempted_at=now)
    )
    quiet = outbox.backlog(Selection(), now, timeout, settle)
    assert (quiet.total, quiet.due) == (11, False)
    assert quiet.describe(settle) == (
        "11 pairs still open: 6 claimed by a run in progress; "
        "3 of uncertain delivery, looked up on Zulip once 2 min old; 2 failed for good (only --process-pending retries them)"
    )
    assert outbox.backlog(Selection(), now + dt.timedelta(minutes=31), timeout, settle).stale_claims == 6


def test_zulip_rate_limit_headers_pace_the_run(tmp_path: Path, isolated_zulip_env: object) -> None:
    """Once X-RateLimit-Remaining is 0 the run holds off until X-RateLimit-Reset instead of collecting a 429."""
    backend = Backend("sqlite", f"sqlite:///{tmp_path / 'lms.sqlite3'}", f"sqlite:///{tmp_path / 'warehouse.sqlite3'}")
    with FakeZulip(rate_limit=(2.0, 3)) as server:
        add_mentors(server)
        recent_school(backend.lms_url)
        pipe = Pipeline(backend, resources={"zulip": fast_zulip(server, max_retry_after_seconds=10.0)})
        pipe.ingest(*recent_days())
        result = pipe.notify()
        meta = op_metadata(result)
        assert (meta["sent"], meta["failed"], len(server.messages)) == (12, 0, 4)
        logged = [e.message for e in pipe.instance.all_logs(result.run_id)]
        assert any("as Zulip's rate-limit headers asked" in m for m in logged)


def test_pacing_reads_the_reset_on_the_servers_clock(isolated_zulip_env: object) -> None:
    """The server's clock is an hour off ours: the pause is still the minute Zulip asked for."""
    for offset in (-3600.0, 3600.0):
        with FakeZulip(rate_limit=(60.0, 2), clock_offset=offset) as server:
            gateway = ZulipGateway({"site": server.url, "email": server.email, "api_key": server.api_key}, timeout=5)
            assert gateway.lookup_user(server.email).ok and gateway.pause() == 0.0  # one request left
            assert gateway.lookup_user(server.email).ok
            assert 58.0 <= gateway.pause() <= 61.0, offset
            assert gateway.lookup_user(server.email).kind == "rate_limited"  # what pacing avoids
