"""Pure notification logic: who is told, retry policy, batches, message planning, recipients."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from lms_activity_pipeline.domain.batches import mentor_batches, plan_messages
from lms_activity_pipeline.domain.delivery import (
    Reply,
    ReplyKind,
    RetryPolicy,
    call_with_retries,
    call_without_duplicates,
)
from lms_activity_pipeline.domain.mentor_pairs import notification_pairs
from lms_activity_pipeline.domain.messages import render_digest, render_digest_parts
from lms_activity_pipeline.domain.notification_event import NotificationEvent
from lms_activity_pipeline.domain.outbox import PendingPair
from lms_activity_pipeline.domain.recipients import MentorContact, ZulipAccount, user_path

pytestmark = pytest.mark.unit


NOW = dt.datetime(2024, 5, 10, 12, tzinfo=dt.UTC)


def ts(hours_ago: float) -> pd.Timestamp:
    return pd.Timestamp(NOW - dt.timedelta(hours=hours_ago))


# --- who hears about what ------------------------------------------------------------


def test_every_active_mentor_of_young_events_gets_a_pair() -> None:
    events = pd.DataFrame(
        {
            "event_key": ["exam:1:exam_failed", "exam:2:exam_started", "exam:3:exam_started"],
            "student_id": [1, 2, 3],
            "timestamp": [ts(1), ts(2), ts(30)],  # the last one is too old
        }
    )
    assignments = pd.DataFrame(
        {
            "student_id": [1, 1, 1, 2, 2, 3],
            "mentor_id": [10, 11, 12, 10, 10, 10],
            "assigned_at": [ts(100), ts(100), ts(0.5), ts(100), ts(50), ts(100)],  # 12 assigned after the event
            "ended_at": [None, ts(5), None, None, None, None],  # 11's assignment ended before
        }
    )
    pairs = notification_pairs(events, assignments, now=NOW, max_age=dt.timedelta(hours=24))
    assert pairs.to_dict("records") == [
        {"event_key": "exam:1:exam_failed", "mentor_id": 10},
        {"event_key": "exam:2:exam_started", "mentor_id": 10},  # assigned twice: one pair
    ]
    assert notification_pairs(events, assignments, now=NOW, max_age=dt.timedelta(0)).empty
    assert notification_pairs(events.iloc[:0], assignments, now=NOW, max_age=dt.timedelta(hours=24)).empty


# --- retry policy ---------------------------------------------------------------------


def scripted(*replies: Reply):
    queue = list(replies)
    calls: list[int] = []

    def call() -> Reply:
        calls.append(1)
        return queue.pop(0)

    call.calls = calls  # type: ignore[attr-defined]
    return call


OK = Reply(ReplyKind.OK, {"id": 7})
BUSY = Reply(ReplyKind.RETRYABLE, error="HTTP 502")


def test_rate_limit_waits_retry_after_and_is_not_an_attempt() -> None:
    slept: list[float] = []
    call = scripted(Reply(ReplyKind.RATE_LIMITED, retry_after=2.5), Reply(ReplyKind.RATE_LIMITED, retry_after=None), OK)
    delivery = call_with_retries(call, RetryPolicy(default_retry_after_seconds=1), slept.append)
    assert delivery.ok and delivery.attempts == 1 and delivery.rate_limit_waits == 2
    assert slept == [2.5, 1]


def test_server_errors_back_off_then_give_up() -> None:
    slept: list[float] = []
    policy = RetryPolicy(max_attempts=4, backoff_seconds=1, backoff_factor=3, max_backoff_seconds=5)
    delivery = call_with_retries(scripted(BUSY, BUSY, BUSY, BUSY, OK), policy, slept.append)
    assert not delivery.ok and delivery.attempts == 4
    assert slept == [1, 3, 5]  # capped at max_backoff_seconds
    assert delivery.error == "gave up after 4 attempt(s): HTTP 502"
    assert call_with_retries(scripted(BUSY, OK), policy, slept.append).attempts == 2


@pytest.mark.parametrize("kind", [ReplyKind.UNCERTAIN, ReplyKind.REJECTED])
def test_uncertain_and_rejected_are_never_repeated(kind: ReplyKind) -> None:
    call = scripted(Reply(kind, error="no reply within 15 s"), OK)
    delivery = call_with_retries(call, RetryPolicy(), lambda s: pytest.fail("must not wait"))
    assert delivery.attempts == 1 and len(call.calls) == 1
    if kind is ReplyKind.UNCERTAIN:
        assert delivery.error.startswith("uncertain delivery")


STORED_MAYBE = Reply(ReplyKind.RETRYABLE, error="HTTP 502", maybe_done=True)
NOT_FOUND, FOUND = Reply(ReplyKind.OK, {}), Reply(ReplyKind.OK, {"id": 9})


def test_a_send_that_may_have_happened_is_looked_up_before_it_is_repeated() -> None:
    policy, no_wait = RetryPolicy(max_attempts=3, backoff_seconds=0), lambda s: None
    send, find = scripted(STORED_MAYBE, OK), scripted(FOUND)
    delivery = call_without_duplicates(send, find, policy, no_wait)
    assert delivery.ok and delivery.reply.body == {"id": 9, "recovered": "HTTP 502"} and len(send.calls) == 1

    send, find = scripted(STORED_MAYBE, OK), scripted(NOT_FOUND)
    delivery = call_without_duplicates(send, find, policy, no_wait)
    assert delivery.ok and delivery.reply.body == {"id": 7} and delivery.attempts == 2  # not stored: sent again

    send, find = scripted(BUSY, OK), scripted()  # failed before reaching the server: no lookup needed
    assert call_without_duplicates(send, find, policy, no_wait).attempts == 2 and not find.calls

    send, find = scripted(STORED_MAYBE, OK), scripted(BUSY, BUSY, BUSY)  # the lookup is retried, then gives up
    delivery = call_without_duplicates(send, find, policy, no_wait)
    assert delivery.reply.kind is ReplyKind.UNCERTAIN and len(send.calls) == 1 and len(find.calls) == 3
    assert delivery.error == (
        "uncertain delivery (Zulip is asked before any resend): HTTP 502; "
        "could not check whether it was stored: gave up after 3 attempt(s): HTTP 502"
    )


def test_systemic_failures_are_those_every_mentor_would_hit() -> None:
    assert BUSY.is_systemic and Reply(ReplyKind.RATE_LIMITED).is_systemic
    assert Reply(ReplyKind.REJECTED, status=401).is_systemic and Reply(ReplyKind.REJECTED, status=None).is_systemic
    assert not Reply(ReplyKind.REJECTED, status=400).is_systemic
    assert Reply(ReplyKind.UNCERTAIN).is_systemic  # timeouts: an outage looks like this too


def test_all_waits_of_one_request_stay_under_the_cap() -> None:
    slept: list[float] = []
    policy = RetryPolicy(max_rate_limit_waits=100, max_retry_after_seconds=300, max_total_wait_seconds=700)
    delivery = call_with_retries(lambda: Reply(ReplyKind.RATE_LIMITED, retry_after=300), policy, slept.append)
    assert slept == [300, 300] and delivery.reply.kind is ReplyKind.RATE_LIMITED and delivery.waited_seconds == 600
    slept.clear()
    policy = RetryPolicy(max_attempts=10, backoff_seconds=100, max_backoff_seconds=1000, max_total_wait_seconds=350)
    delivery = call_with_retries(lambda: BUSY, policy, slept.append)
    assert slept == [100, 200] and delivery.attempts == 3


def test_endless_rate_limiting_is_bounded_and_waits_are_capped() -> None:
    slept: list[float] = []
    policy = RetryPolicy(max_rate_limit_waits=3, max_retry_after_seconds=10)
    delivery = call_with_retries(lambda: Reply(ReplyKind.RATE_LIMITED, retry_after=3600), policy, slept.append)
    assert not delivery.ok and delivery.rate_limit_waits == 3 and slept == [10, 10, 10]
    assert delivery.error.startswith("still rate limited after 3 waits")


def test_the_server_asked_pause_is_taken_before_the_request_within_the_caps() -> None:
    slept: list[float] = []
    pauses = [30.0, 0.0, 5000.0]  # what the gateway says before each request: hold off, go, absurd
    policy = RetryPolicy(max_retry_after_seconds=300, max_total_wait_seconds=400, backoff_seconds=1)
    delivery = call_with_retries(scripted(BUSY, BUSY, OK), policy, slept.append, pace=lambda: pauses.pop(0))
    assert delivery.ok and slept == [30.0, 1, 2, 300.0]  # paused, backoff, backoff, paused at the cap
    assert (delivery.paced_seconds, delivery.waited_seconds, delivery.rate_limit_waits) == (330.0, 333.0, 0)

    slept.clear()  # a pause that no longer fits in the message's total wait is not taken: the request goes out
    tight = RetryPolicy(max_retry_after_seconds=300, max_total_wait_seconds=100)
    assert call_with_retries(scripted(OK), tight, slept.append, pace=lambda: 200.0).ok and slept == []


# --- batches and messages -----------------------------------------------------------------


def event(
    event_id: int, event_type: str = "exam_failed", student_id: int = 1, title: str = "Quiz"
) -> NotificationEvent:
    return NotificationEvent(
        event_id=event_id,
        event_key=f"exam:{event_id}:{event_type}",
        event_type=event_type,
        student_id=student_id,
        student_username=f"student{student_id}",
        timestamp=NOW - dt.timedelta(minutes=event_id),
        activity_title=title,
        course_title="Algebra",
        metadata={"score": 20, "max_score": 50, "pass_score": 35},
    )


def test_mentor_batches_group_oldest_first_and_whole() -> None:
    pairs = [PendingPair(5, 50, 11), PendingPair(1, 10, 10), PendingPair(2, 20, 11), PendingPair(3, 30, 10)]
    batches = mentor_batches(pairs)
    assert [(b.mentor_id, b.log_ids) for b in batches] == [(10, [1, 3]), (11, [2, 5])]


def test_plan_messages_single_or_digest() -> None:
    [single] = plan_messages([event(1)])
    assert single.event_ids == (1,) and single.content.startswith("❌ **student1** failed the exam **Quiz**")
    [digest] = plan_messages([event(1), event(2, "exam_started")])
    assert digest.is_digest and sorted(digest.event_ids) == [1, 2]
    assert digest.content.startswith("📬 **LMS activity digest**: 2 events")
    assert plan_messages([]) == []


def test_digest_parts_list_each_event_exactly_once() -> None:
    events = [event(i, student_id=i % 7, title="T" * 180) for i in range(1, 121)]
    parts = render_digest_parts(events, limit=3000)
    assert len(parts) > 3
    assert [p.text for p in parts] == render_digest(events, limit=3000)
    listed = [i for p in parts for i in p.event_ids]
    assert sorted(listed) == list(range(1, 121))
    for part in parts:  # each part's ids are exactly the events whose lines it holds
        assert part.text.count("\n- ") == len(part.event_ids)


# --- recipients ------------------------------------------------------------------------


def test_recipient_skip_reasons() -> None:
    assert MentorContact(10, "m", "m@x.org").skip_reason is None
    assert "not in the LMS" in MentorContact(10, in_lms=False).skip_reason
    assert "no e-mail" in MentorContact(10, "m", None).skip_reason
    assert "inactive in the LMS" in MentorContact(10, "m", "m@x.org", is_active=False).skip_reason
    user = {"user_id": 5, "full_name": "M", "is_active": True, "is_bot": False}
    assert ZulipAccount.from_api("M@X.org ", user).skip_reason is None
    assert ZulipAccount.from_api("m@x.org", user).email == "m@x.org"
    assert ZulipAccount.unknown("m@x.org").skip_reason == "no Zulip user with e-mail m@x.org"
    assert "deactivated" in ZulipAccount.from_api("m@x.org", {**user, "is_active": False}).skip_reason
    assert "is a bot" in ZulipAccount.from_api("m@x.org", {**user, "is_bot": True}).skip_reason
    assert user_path("Mentor+LMS/1@Example.com") == "users/mentor%2Blms%2F1%40example.com"
