"""At-risk digests end to end: student_risk -> notify runs -> the official zulip client -> loopback Zulip,
exactly once per (student, course, day) whatever is re-run; reactions read back into risk_feedback."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import zulip
from dagster import build_schedule_context

from lms_activity_pipeline import names
from lms_activity_pipeline.defs.resources import RiskSettings
from lms_activity_pipeline.defs.runs import run_student_risk
from lms_activity_pipeline.domain.preferences import Preference
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.preferences import PreferenceStore
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.risk.test_student_risk_asset import first_week, later_weeks
from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder, t
from lms_activity_pipeline_tests.support.notify_helpers import fast_zulip
from lms_activity_pipeline_tests.support.pipeline import Pipeline, op_metadata

MENTOR_KEYS = {10: "key-m", 11: "key-n"}


def school_with_dave(backend: Backend) -> LMSBuilder:
    """:func:`first_week` plus Dave (mentor 10), who reads every day 05-08..05-10 and passed the quiz."""
    b = first_week(backend)
    b.user(4, "dave").assign(5, 4, 10, t(1, 0))
    b.attempt(40, 4, 200, "graded", t(8, 8), submitted_at=t(8, 8, 30), graded_at=t(8, 9), score=45)
    for i, d in enumerate((8, 9, 10)):
        b.content_attempt(50 + i, 4, 301, "completed", t(d, 11), completed_at=t(d, 11, 20), progress_percent=100)
    return b.write()


def mentors_on(server: FakeZulip) -> dict[int, int]:
    """Mentors 10 and 11 on Zulip (with API keys, so they can react); LMS id -> Zulip id."""
    return {
        m: server.add_user(f"{name}@example.edu", name, api_key=MENTOR_KEYS[m]).user_id
        for m, name in ((10, "mentor_m"), (11, "mentor_n"))
    }


def log(pipe: Pipeline) -> pd.DataFrame:
    return pipe.table(wh.risk_digest_log, ["as_of", "mentor_id", "student_id"])


def react(server: FakeZulip, mentor: int, message_id: int, emoji: str) -> None:
    client = zulip.Client(
        email=f"{'mentor_m' if mentor == 10 else 'mentor_n'}@example.edu", api_key=MENTOR_KEYS[mentor], site=server.url
    )
    assert client.add_reaction({"message_id": message_id, "emoji_name": emoji})["result"] == "success"


def test_digest_once_per_flag_new_resolved_good_news_and_feedback(backend: Backend, fake_zulip: FakeZulip) -> None:
    b = school_with_dave(backend)
    zulip_ids = mentors_on(fake_zulip)
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip)})
    pipe.ingest("2024-05-03", "2024-05-10")
    run_student_risk(pipe.defs, pipe.instance, "2024-05-10")

    meta = op_metadata(pipe.notify())
    assert meta["risk_digest_day"] == "2024-05-10" and meta["risk_digest_messages"] == 2
    to_m, to_n = fake_zulip.messages_to(zulip_ids[10]), fake_zulip.messages_to(zulip_ids[11])
    assert len(to_m) == 1 and len(to_n) == 1
    text = to_m[0].content
    assert text.startswith("**Students at risk in Algebra I** (as of 2024-05-10)\n🔴 **High risk**")
    assert "- alice (new): no activity in the course for 7 days, with an exam not passed yet" in text
    assert "- bob (new): failed Quadratics quiz 2 times in a row; has failed Quadratics quiz and not passed yet" in text
    assert "🌟 Good news: 1 student on track, active day after day: dave (3 days)" in text
    assert "React 👍 if so, 👎 if someone here is wrongly flagged." in text
    assert "🟠 **Medium risk**\n- carol (new): started Intro video over 7 days ago" in to_n[0].content
    told = log(pipe)
    assert set(told["status"]) == {"sent"} and len(told) == 3
    assert set(told["message_id"].astype(int)) == {to_m[0].id, to_n[0].id}

    # Re-runs tell nothing again: the (mentor, student, course, day) rows exist, and weekly is not due.
    pipe.notify()
    run_student_risk(pipe.defs, pipe.instance, "2024-05-10")
    pipe.notify()
    assert len(fake_zulip.messages) == 2 and len(log(pipe)) == 3

    # Later: Bob passes and Alice comes back (both resolved); mentors on immediate digests get 05-12's news.
    later_weeks(b)
    pipe.ingest("2024-05-11", "2024-05-12")
    run_student_risk(pipe.defs, pipe.instance, "2024-05-12")
    risk = RiskSettings(digest_frequency="immediate")
    immediate = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip), "risk": risk})
    immediate.notify()
    immediate.notify()
    to_m = fake_zulip.messages_to(zulip_ids[10])
    assert len(to_m) == 2
    assert to_m[1].content.splitlines()[:3] == [
        "**Students at risk in Algebra I** (as of 2024-05-12)",
        "Nobody is flagged at the moment.",
        "✅ No longer at risk since the last digest: alice, bob",
    ]
    day12 = log(pipe)[log(pipe)["as_of"].astype(str) == "2024-05-12"]
    assert sorted(zip(day12["student_id"].astype(int), day12["risk_level"], strict=True)) == [
        (1, "resolved"),
        (2, "resolved"),
        (3, "medium"),
    ]
    assert "- carol: started Intro video" in fake_zulip.messages_to(zulip_ids[11])[1].content  # no longer new

    # Feedback: the mentors react on Zulip; the job reads it back, once.
    react(fake_zulip, 10, to_m[0].id, "+1")
    react(fake_zulip, 11, to_n[0].id, "-1")
    job = pipe.defs.resolve_job_def(names.RISK_FEEDBACK_JOB)
    result = job.execute_in_process(instance=pipe.instance)
    assert op_metadata(result, "read_risk_feedback")["feedback_rows_recorded"] == 3
    job.execute_in_process(instance=pipe.instance)
    feedback = pipe.table(wh.risk_feedback, ["message_id", "student_id"])
    assert list(
        zip(feedback["mentor_id"].astype(int), feedback["student_id"].astype(int), feedback["label"], strict=True)
    ) == [
        (10, 1, "useful"),
        (10, 2, "useful"),
        (11, 3, "wrongly_flagged"),
    ]


def test_dry_run_digest_is_logged_once(backend: Backend) -> None:
    school_with_dave(backend)
    pipe = Pipeline(backend)
    pipe.ingest("2024-05-03", "2024-05-10")
    assert retry_schedule_wants_a_run(pipe) is False  # nothing computed, nothing due
    run_student_risk(pipe.defs, pipe.instance, "2024-05-10")
    assert retry_schedule_wants_a_run(pipe) is True  # only digests are due: the schedule starts a run
    meta = op_metadata(pipe.notify())
    assert meta["risk_digest_dry_run"] == 3 and meta["risk_digest_messages"] == 2
    assert "Students at risk in Algebra I" in meta["risk_digest_preview"]
    pipe.notify()
    assert set(log(pipe)["status"]) == {"dry_run"} and len(log(pipe)) == 3
    assert retry_schedule_wants_a_run(pipe) is False


def retry_schedule_wants_a_run(pipe: Pipeline) -> bool:
    schedule = pipe.defs.resolve_schedule_def(names.NOTIFY_RETRY_SCHEDULE)
    resources = {k: v for k, v in (pipe.defs.resources or {}).items() if k in ("warehouse", "settings", "risk")}
    context = build_schedule_context(instance=pipe.instance, resources=resources)
    return bool(schedule.evaluate_tick(context).run_requests)


def test_interrupted_send_is_found_on_zulip_and_a_send_in_flight_is_left_alone(
    backend: Backend, fake_zulip: FakeZulip
) -> None:
    school_with_dave(backend)
    mentors_on(fake_zulip)
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip)})
    pipe.ingest("2024-05-03", "2024-05-10")
    run_student_risk(pipe.defs, pipe.instance, "2024-05-10")
    pipe.notify()
    sent = log(pipe)
    assert len(fake_zulip.messages) == 2 and set(sent["status"]) == {"sent"}
    table = wh.risk_digest_log
    now = dt.datetime.now(dt.UTC)

    # A run stopped after the request: rows still "sending" with the text's digest, long ago.
    pipe.execute(table.update().values(status="sending", message_id=None, attempted_at=now - dt.timedelta(hours=1)))
    pipe.notify()
    again = log(pipe)
    assert len(fake_zulip.messages) == 2  # looked up, not resent
    assert set(again["status"]) == {"sent"} and list(again["message_id"]) == list(sent["message_id"])

    # Another run is sending right now: its rows are not open, nothing happens.
    pipe.execute(table.update().values(status="sending", message_id=None, attempted_at=now))
    pipe.notify()
    assert len(fake_zulip.messages) == 2 and set(log(pipe)["status"]) == {"sending"}


def test_a_mentors_preference_sets_their_digest_cadence(backend: Backend, fake_zulip: FakeZulip) -> None:
    """A preference for all students (or the course) replaces LMS_RISK_DIGEST_FREQUENCY: ``off`` sends none."""
    school_with_dave(backend)
    zulip_ids = mentors_on(fake_zulip)
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip)})
    pipe.ingest("2024-05-03", "2024-05-10")
    run_student_risk(pipe.defs, pipe.instance, "2024-05-10")
    PreferenceStore(pipe.warehouse.engine).put(Preference(11, frequency="off"), dt.datetime.now(dt.UTC))

    meta = op_metadata(pipe.notify())
    assert meta["risk_digest_messages"] == 1
    assert len(fake_zulip.messages_to(zulip_ids[10])) == 1 and fake_zulip.messages_to(zulip_ids[11]) == []
    assert set(log(pipe)["mentor_id"].astype(int)) == {10}
