"""Mentor notifications end to end: LMS -> ingest run -> outbox -> notify run -> Zulip test server.

Real parts throughout: SQLite and PostgreSQL warehouses, Dagster runs, the
official ``zulip`` client talking HTTP to :class:`FakeZulip`.
"""

from __future__ import annotations

import sqlalchemy as sa

from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES
from lms_activity_pipeline.domain.messages import FOOTER, ZWSP
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder, t
from lms_activity_pipeline_tests.support.notify_helpers import (
    add_mentors,
    ago,
    email,
    fast_zulip,
    recent_days,
    recent_school,
)
from lms_activity_pipeline_tests.support.pipeline import Pipeline, metadata, op_metadata

#: Who gets which event type in :func:`recent_school` (LMS mentor ids).
RECIPIENTS = {
    "exam_started": {10, 11, 12},
    "exam_completed": {10, 11, 12},
    "exam_passed": {10},
    "exam_failed": {11, 12},
    "content_started": {13},
    "content_watched": {13},
    "content_completed": {13},
}
STUDENT_OF = {10: "Alice Liddell", 11: "Bob Stone", 12: "Bob Stone", 13: "Carol Danvers"}
HEADLINE = {
    "exam_started": "📝 **{student}** started the exam",
    "exam_completed": "🏁 **{student}** submitted the exam",
    "exam_passed": "✅ **Alice Liddell** passed the exam **Quadratics quiz** (attempt 1)",
    "exam_failed": "❌ **Bob Stone** failed the exam **Final exam** (attempt 1)",
    "content_started": "📚 **Carol Danvers** started **Intro video**",
    "content_watched": "🎬 **Carol Danvers** watched **Intro video**",
    "content_completed": "🎓 **Carol Danvers** completed **Intro video**",
}
DETAIL = {
    "exam_started": "Course: Algebra I",
    "exam_completed": "Time spent: ",
    "exam_passed": "Score: 42/50 (84%), pass mark 35/50 (70%)",
    "exam_failed": "Score: 50/100 (50%), pass mark 60/100 (60%)",
    "content_started": "Content: video · progress 95% · time spent 10 min",
    "content_watched": "Content: video · progress 95% · time spent 10 min",
    "content_completed": "Content: video · progress 95% · time spent 10 min",
}


def ingested(backend: Backend, server: FakeZulip | None, **env: str) -> tuple[Pipeline, LMSBuilder]:
    """The recent school ingested (12 pairs enqueued), Zulip pointed at ``server`` (None: dry-run)."""
    lms = recent_school(backend.lms_url)
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(server)}, **env)
    result = pipe.ingest(*recent_days())
    assert metadata(result, "lms_activity_events")["notifications_enqueued"] == 12
    return pipe, lms


def by_recipient(server: FakeZulip) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for message in server.messages:
        for user_id in message.recipient_ids:
            found.setdefault(user_id, []).append(message.content)
    return found


def test_each_event_type_gives_its_message_to_the_right_mentors(backend: Backend, fake_zulip: FakeZulip) -> None:
    zulip_ids = add_mentors(fake_zulip)
    pipe, _ = ingested(backend, fake_zulip)
    for event_type in ALL_EVENT_TYPES:
        before = len(fake_zulip.messages)
        meta = op_metadata(pipe.notify(event_types=(event_type,)))
        new = fake_zulip.messages[before:]
        assert {m.recipient_ids[0] for m in new} == {zulip_ids[m] for m in RECIPIENTS[event_type]}, event_type
        assert all(len(m.recipient_ids) == 1 and m.type == "direct" for m in new)
        mentor_of = {z: m for m, z in zulip_ids.items()}
        for message in new:  # one rich message per event (no digest: one event per mentor and type)
            student = STUDENT_OF[mentor_of[message.recipient_ids[0]]]
            assert message.content.startswith(HEADLINE[event_type].format(student=student)), message.content
            assert DETAIL[event_type] in message.content and "When: " in message.content
        assert meta["sent"] == len(RECIPIENTS[event_type]) and meta["failed"] == meta["skipped"] == 0

    log = pipe.log_rows()
    assert len(log) == 12 and set(log["status"]) == {"sent"} and log["notification_sent"].all()
    assert set(log["attempts"]) == {1} and log["error_message"].isna().all()
    assert sorted(log["notification_message_id"]) == sorted(m.id for m in fake_zulip.messages)
    assert (log["zulip_user_id"] == log["mentor_id"].map(zulip_ids)).all()
    events = pipe.events().set_index("event_key")  # the event's own (first) mentor's Zulip id
    assert events.loc["exam:2:exam_failed", "zulip_user_id"] == zulip_ids[11]
    assert events.loc["exam:1:exam_passed", "zulip_user_id"] == zulip_ids[10]


def test_digest_per_mentor_and_reruns_send_nothing_new(backend: Backend, fake_zulip: FakeZulip) -> None:
    zulip_ids = add_mentors(fake_zulip)
    pipe, _ = ingested(backend, fake_zulip)
    meta = op_metadata(pipe.notify())
    assert (meta["sent"], meta["messages"], meta["mentors"], meta["zulip_user_lookups"]) == (12, 4, 4, 4)
    assert "Bob Stone" in meta["preview"]
    received = by_recipient(fake_zulip)
    assert set(received) == set(zulip_ids.values()) and all(len(v) == 1 for v in received.values())
    bob = received[zulip_ids[11]][0]
    assert bob == received[zulip_ids[12]][0]  # both of Bob's mentors get the same digest
    # one line per attempt in its latest state (started, submitted, failed fold into "failed"), then the footer
    assert bob.startswith("📬 **LMS activity digest**: 3 events from 1 student\n❌ 1 exam failed\n\n**Bob Stone**")
    assert bob.count("\n- ") == 1 and "started the exam" not in bob and bob.endswith(FOOTER)

    sent = len(fake_zulip.messages)
    again = pipe.ingest(*recent_days())  # reprocessing the same days
    assert metadata(again, "lms_activity_events")["notifications_enqueued"] == 0
    assert op_metadata(pipe.notify())["sent"] == 0
    assert op_metadata(pipe.notify(retry_all_failed=True))["sent"] == 0
    assert len(fake_zulip.messages) == sent
    assert set(pipe.log_rows()["status"]) == {"sent"} and len(pipe.log_rows()) == 12


def test_backfill_of_old_days_notifies_nobody(backend: Backend, fake_zulip: FakeZulip) -> None:
    b = LMSBuilder(backend.lms_url).school()
    b.attempt(1, 1, 200, "graded", t(3, 10), submitted_at=t(3, 10, 30), graded_at=t(3, 11), score=20)
    b.write()
    fake_zulip.add_user("mentor_m@example.edu")
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip)})
    result = pipe.ingest("2024-05-01", "2024-05-05")
    assert len(pipe.events()) == 3 and metadata(result, "lms_activity_events")["notifications_enqueued"] == 0
    assert op_metadata(pipe.notify())["sent"] == 0
    assert pipe.count(wh.lms_event_log) == 0 and fake_zulip.requests_to("messages") == []


def test_long_digest_is_split_and_each_pair_recorded_with_its_part(backend: Backend, fake_zulip: FakeZulip) -> None:
    b = LMSBuilder(backend.lms_url)
    b.user(1, "alice", full_name="Alice Liddell").user(10, "mentor_m", role="mentor").course(100, "Algebra I")
    b.assign(1, 1, 10, ago(100))
    for i in range(1, 41):
        b.content(300 + i, 100, f"Chapter {i}: " + "a very long and winding title " * 6, "article")
        b.content_attempt(
            i, 1, 300 + i, "completed", ago(3), completed_at=ago(2), progress_percent=100, time_spent_seconds=60
        )
    b.write()
    zulip_id = fake_zulip.add_user("mentor_m@example.edu").user_id
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip)})
    pipe.ingest(*recent_days())

    meta = op_metadata(pipe.notify())
    parts = [m.content for m in fake_zulip.messages_to(zulip_id)]
    assert meta["sent"] == 80 and meta["messages"] == len(parts) >= 2
    for number, part in enumerate(parts, start=1):
        assert len(part) <= 10_000 and "[message truncated]" not in part
        assert part.splitlines()[0].endswith(f"(part {number}/{len(parts)})")
    assert sum(part.count("\n- ") for part in parts) == 40  # each attempt's started + completed fold into one line
    log = pipe.log_rows()
    per_message = log.groupby("notification_message_id").size()
    assert sorted(per_message.index) == sorted(m.id for m in fake_zulip.messages)
    for message in fake_zulip.messages:  # each pair points at the part that lists its (folded) event
        assert 2 * message.content.count("\n- ") == per_message[message.id]


def test_injection_in_titles_and_names_arrives_as_plain_text(backend: Backend, fake_zulip: FakeZulip) -> None:
    add_mentors(fake_zulip, 10)
    hostile = "@**all** #**general** [x](http://evil)"
    recent_school(backend.lms_url, course_title=hostile, alice_name="@*admins* `code`\n> quote")
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip)})
    pipe.ingest(*recent_days())
    pipe.notify(event_types=("exam_passed",))
    [message] = fake_zulip.messages
    for live in ("@**all**", "#**general**", "](", "[x]", "http://", "@*admins*", "`", "\n>"):
        assert live not in message.content
    visible = message.content.replace(ZWSP, "").replace("\u2217", "*")
    assert f"Course: {hostile}" in visible  # the text arrives, as plain text


def test_a_student_name_of_invisible_characters_is_shown_as_the_username(
    backend: Backend, fake_zulip: FakeZulip
) -> None:
    add_mentors(fake_zulip, 10)
    recent_school(backend.lms_url, alice_name="\u200b\u200f \u2066\u2069\t\u200b")  # the LMS has it, nobody sees it
    pipe = Pipeline(backend, resources={"zulip": fast_zulip(fake_zulip)})
    pipe.ingest(*recent_days())
    pipe.notify(event_types=("exam_passed",))
    [message] = fake_zulip.messages
    assert message.content.startswith("✅ **alice** passed the exam **Quadratics quiz**")


def test_rate_limit_is_waited_out_and_sends_exactly_once(backend: Backend, fake_zulip: FakeZulip) -> None:
    zulip_ids = add_mentors(fake_zulip)
    pipe, _ = ingested(backend, fake_zulip)
    fake_zulip.fail_next("messages", 429, retry_after=0.05)
    fake_zulip.fail_next("users", 429, retry_after=0.05)
    meta = op_metadata(pipe.notify(event_types=("exam_passed",)))
    assert meta["sent"] == 1
    assert [m.recipient_ids for m in fake_zulip.messages] == [[zulip_ids[10]]]
    assert [r.status for r in fake_zulip.requests_to("messages")] == [429, 200]
    row = pipe.log_rows().set_index(["event_key", "mentor_id"]).loc[("exam:1:exam_passed", 10)]
    assert row["status"] == "sent" and row["attempts"] == 1  # the 429 is not a failed attempt


def test_dry_run_without_zulip_renders_logs_and_records(backend: Backend) -> None:
    pipe, _ = ingested(backend, None)
    result = pipe.notify()
    meta = op_metadata(result)
    assert meta["mode"] == "dry_run" and meta["zulip"] == "dry-run (no Zulip configured)"
    assert (meta["dry_run"], meta["sent"], meta["messages"]) == (12, 0, 4)
    log = pipe.log_rows()
    assert set(log["status"]) == {"dry_run"} and not log["notification_sent"].any()
    logged = "\n".join(e.message for e in pipe.instance.all_logs(result.run_id))
    assert "[dry-run] DM to mentor mentor_n (id 11) <mentor_n@example.edu>" in logged
    assert "50/100 (50%), pass mark 60/100 (60%)" in logged
    assert op_metadata(pipe.notify())["dry_run"] == 0  # dry_run is final


def test_unknown_deactivated_and_bot_mentors_are_skipped_and_lookups_cached(
    backend: Backend, fake_zulip: FakeZulip
) -> None:
    zulip_ids = add_mentors(fake_zulip, 10, 11)  # 12 is unknown to Zulip
    fake_zulip.deactivate_user(email(11))
    fake_zulip.add_user(email(13), "Bot", is_bot=True)
    pipe, lms = ingested(backend, fake_zulip)
    meta = op_metadata(pipe.notify())
    assert (meta["sent"], meta["skipped"], meta["failed"]) == (3, 9, 0)
    assert [m.recipient_ids for m in fake_zulip.messages] == [[zulip_ids[10]]]
    reasons = pipe.log_rows().groupby("mentor_id")["error_message"].first()
    assert reasons[11] == f"Zulip user {email(11)} is deactivated"
    assert reasons[12] == f"no Zulip user with e-mail {email(12)}"
    assert reasons[13] == f"Zulip user {email(13)} is a bot"
    assert len(fake_zulip.requests_to("users")) == 4 == meta["zulip_user_lookups"]

    # New events for the same mentors: the cache answers, Zulip is not asked again.
    lms.attempt(3, 1, 201, "in_progress", ago(1)).attempt(4, 2, 200, "in_progress", ago(1)).write()
    pipe.ingest(*recent_days())
    meta = op_metadata(pipe.notify())
    assert (meta["sent"], meta["skipped"], meta["zulip_user_lookups"]) == (1, 2, 0)
    assert len(fake_zulip.requests_to("users")) == 4
    with pipe.warehouse.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(wh.zulip_user_cache)).scalar() == 4
