"""The outbox under concurrency and crashes, and its additive migration."""

from __future__ import annotations

import datetime as dt
import logging
import threading

import sqlalchemy as sa

from lms_activity_pipeline.defs.notify.ops import zulip_setup
from lms_activity_pipeline.lms.reader import LMSReader
from lms_activity_pipeline.notify.notifier import Notifier, NotifySummary
from lms_activity_pipeline.notify.request import NotifyRequest
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.outbox import Selection, try_lock_mentors
from lms_activity_pipeline.warehouse.store import Warehouse
from lms_activity_pipeline_tests.conftest import Backend, PgDatabases
from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder
from lms_activity_pipeline_tests.support.notify_helpers import add_mentors, ago, fast_zulip, recent_days, recent_school
from lms_activity_pipeline_tests.support.pipeline import Pipeline, op_metadata

STUDENTS, MENTORS = 20, 10


def events_in(digest: str) -> int:
    """The events a digest says it carries (its lines fold an attempt's events into one)."""
    return int(digest.split("**LMS activity digest**: ", 1)[1].split(" event", 1)[0])


def crowded_school(backend: Backend, server: FakeZulip) -> Pipeline:
    """20 students with two mentors each (10 mentors), three video events per student: 120 pairs."""
    b = LMSBuilder(backend.lms_url).course(100, "Algebra I").content(300, 100, "Intro video", "video", 600)
    for m in range(MENTORS):
        b.user(100 + m, f"mentor{m}", role="mentor")
        server.add_user(f"mentor{m}@example.edu")
    for s in range(1, STUDENTS + 1):
        b.user(s, f"student{s}")
        b.assign(2 * s, s, 100 + s % MENTORS, ago(100)).assign(2 * s + 1, s, 100 + (s + 1) % MENTORS, ago(100))
        b.content_attempt(
            s, s, 300, "completed", ago(3), completed_at=ago(2), progress_percent=100, time_spent_seconds=600
        )
    b.write()
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(server)})
    pipe.ingest(*recent_days())
    assert pipe.count(wh.lms_event_log) == 120
    return pipe


def test_concurrent_runs_never_send_the_same_pair(backend: Backend, fake_zulip: FakeZulip) -> None:
    pipe = crowded_school(backend, fake_zulip)
    fake_zulip.fail_next("messages", 200, delay=0.05, times=MENTORS)  # slow sends: the runs overlap
    lms = LMSReader(backend.lms_url)
    start = threading.Barrier(2)
    summaries: dict[str, NotifySummary] = {}

    def worker(run_id: str) -> None:
        # Each run has its own engine and its own Zulip client, like two processes.
        outbox = Warehouse(backend.warehouse_url).outbox()
        notifier = Notifier(
            outbox, lms.users, zulip_setup(fast_zulip(fake_zulip)), run_id=run_id, log=logging.getLogger(run_id)
        )
        start.wait()
        summaries[run_id] = notifier.run(NotifyRequest())

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("run-a", "run-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    recipients = [r for m in fake_zulip.messages for r in m.recipient_ids]
    assert len(recipients) == MENTORS == len(set(recipients))  # one digest per mentor, nobody twice
    assert sum(s.counts["sent"] for s in summaries.values()) == 120
    assert all(s.counts["sent"] > 0 for s in summaries.values()), "both runs did part of the work"
    assert sum(s.zulip_user_lookups for s in summaries.values()) == MENTORS  # 120 pairs, one lookup per mentor
    log = pipe.log_rows()
    assert set(log["status"]) == {"sent"} and set(log["attempts"]) == {1} and log["claimed_by"].isna().all()
    assert set(log["last_run_id"]) == {"run-a", "run-b"}
    carried = {m.id: events_in(m.content) for m in fake_zulip.messages}
    assert log.groupby("notification_message_id").size().to_dict() == carried


def test_a_mentor_being_claimed_by_another_run_is_left_whole_to_it(
    pg_databases: PgDatabases, fake_zulip: FakeZulip
) -> None:
    """Run A is half-way through claiming a mentor's pairs: run B takes none of them, not the rest."""
    pipe = crowded_school(
        Backend("postgresql", pg_databases.create("lms_src"), pg_databases.create("lms_wh")), fake_zulip
    )
    outbox = pipe.warehouse.outbox()
    mentor = [p.log_id for p in outbox.takeable_pairs(Selection(), [100])]
    assert len(mentor) == 12
    now = dt.datetime.now(dt.UTC)
    with outbox.engine.connect() as a, a.begin() as in_flight:
        assert try_lock_mentors(a, mentor)  # what A's claim does first ...
        locked = sa.select(wh.lms_event_log.c.id).where(wh.lms_event_log.c.id == mentor[0]).with_for_update()
        assert a.execute(locked).scalar_one() == mentor[0]  # ... and A's UPDATE has reached its first row
        assert outbox.claim(mentor, Selection(), "run-b:1", now) == []
        in_flight.rollback()
    assert outbox.claim(mentor, Selection(), "run-b:2", now) == mentor  # A gone: B takes all twelve


def test_a_killed_run_loses_nothing_and_resends_nothing_blindly(backend: Backend, fake_zulip: FakeZulip) -> None:
    zulip_ids = add_mentors(fake_zulip)
    recent_school(backend.lms_url)
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip)})
    pipe.ingest(*recent_days())
    outbox = pipe.warehouse.outbox()
    by_mentor: dict[int, list[int]] = {}
    for pair in outbox.takeable_pairs(Selection(), [10, 11, 12, 13]):
        by_mentor.setdefault(pair.mentor_id, []).append(pair.log_id)
    an_hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    # A run died after claiming mentor 10's pairs, and another while sending to mentor 11.
    assert outbox.claim(by_mentor[10], Selection(), "dead-run:1", an_hour_ago) == by_mentor[10]
    outbox.claim(by_mentor[11], Selection(), "dead-run:2", an_hour_ago)
    assert outbox.mark_sending(by_mentor[11], "dead-run:2", an_hour_ago) == 3
    # A live run is busy with mentor 12 right now.
    outbox.claim(by_mentor[12], Selection(), "live-run:1", dt.datetime.now(dt.UTC))

    meta = op_metadata(pipe.notify())
    assert (meta["stale_claims_released"], meta["stale_claims_uncertain"]) == (3, 3)
    assert meta["sent"] == 6  # mentors 10 and 13
    assert {r for m in fake_zulip.messages for r in m.recipient_ids} == {zulip_ids[10], zulip_ids[13]}
    log = pipe.log_rows().groupby("mentor_id")
    uncertain = log.get_group(11)
    assert set(uncertain["status"]) == {"failed"} and uncertain["delivery_uncertain"].all()
    assert uncertain["error_message"].str.contains("the run holding claim dead-run:2 stopped while sending").all()
    live = log.get_group(12)
    assert set(live["status"]) == {"pending"} and set(live["claimed_by"]) == {"live-run:1"}

    assert op_metadata(pipe.notify())["sent"] == 0  # automatic runs leave the uncertain pairs alone
    assert op_metadata(pipe.notify(retry_all_failed=True))["sent"] == 3  # --process-pending takes them
    assert [m.recipient_ids for m in fake_zulip.messages].count([zulip_ids[11]]) == 1


def test_a_run_terminated_while_sending_gives_back_its_claims_and_never_resends(
    backend: Backend, fake_zulip: FakeZulip
) -> None:
    """Dagster terminates a run with a BaseException: the message in flight becomes uncertain (and is
    found on Zulip later), the mentor's unsent pairs go back at once instead of waiting out the claim."""
    add_mentors(fake_zulip)
    recent_school(backend.lms_url)
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip)})
    pipe.ingest(*recent_days())
    setup = zulip_setup(fast_zulip(fake_zulip))
    send = setup.gateway.send_direct

    def send_then_stop(user_ids, content):
        send(user_ids, content)
        raise KeyboardInterrupt  # like DagsterExecutionInterruptedError: not an Exception

    setup.gateway.send_direct = send_then_stop
    notifier = Notifier(
        pipe.warehouse.outbox(), LMSReader(backend.lms_url).users, setup, run_id="run-x", log=logging.getLogger("x")
    )
    try:
        notifier.run(NotifyRequest())
        raise AssertionError("the interrupt must propagate")
    except KeyboardInterrupt:
        pass
    [stored] = fake_zulip.messages
    log = pipe.log_rows()
    assert log["claimed_by"].isna().all()  # nothing waits 30 minutes for stale-claim recovery
    in_flight = log[log["status"] == "failed"]
    assert len(in_flight) > 0 and in_flight["delivery_uncertain"].all() and in_flight["delivery_digest"].notna().all()
    assert (log["status"] == "pending").sum() == len(log) - len(in_flight)

    meta = op_metadata(pipe.notify(settle_uncertain_after_seconds=0))
    assert meta["uncertain_found_on_zulip"] == len(in_flight) and meta["open_pairs_left"] == 0
    log = pipe.log_rows()
    assert set(log["status"]) == {"sent"}
    assert set(log.loc[in_flight.index, "notification_message_id"]) == {stored.id}
    recipients = [m.recipient_ids[0] for m in fake_zulip.messages]
    assert len(recipients) == len(set(recipients)) == 4  # every mentor once, the interrupted one included


def test_migration_adds_outbox_columns_to_an_existing_log(backend: Backend) -> None:
    schema = "lms_activity" if backend.name == "postgresql" else None
    engine = sa.create_engine(backend.warehouse_url.replace("postgresql://", "postgresql+psycopg2://"))
    old = sa.MetaData(schema=schema)
    table = sa.Table(
        "lms_event_log",
        old,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("event_id", sa.BigInteger, nullable=False),
        sa.Column("mentor_id", sa.BigInteger, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("notification_sent", sa.Boolean, nullable=False),
        sa.Column("notification_message_id", sa.BigInteger),
        sa.Column("error_message", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("event_id", "mentor_id"),
    )
    with engine.begin() as conn:
        if schema:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        old.create_all(conn)
        conn.execute(
            table.insert().values(
                id=1,
                event_id=5,
                mentor_id=10,
                status="sent",
                notification_sent=True,
                notification_message_id=99,
                attempts=1,
                created_at=ago(1),
            )
        )
    engine.dispose()

    warehouse = Warehouse(backend.warehouse_url)
    assert "added column lms_event_log.claimed_by" in warehouse.migrate()
    with warehouse.engine.connect() as conn:
        row = conn.execute(sa.select(wh.lms_event_log)).mappings().one()
    assert (row["status"], row["notification_message_id"], row["delivery_uncertain"], row["claimed_by"]) == (
        "sent",
        99,
        False,
        None,
    )
    assert warehouse.outbox().status_counts()["sent"] == 1
