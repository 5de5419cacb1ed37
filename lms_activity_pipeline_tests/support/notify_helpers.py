"""Test helpers for notifications: an LMS with activity from the last hours, a fast Zulip resource."""

from __future__ import annotations

import datetime as dt

from lms_activity_pipeline.defs.resources import ZulipResource
from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder

#: "Now" for the helpers, fixed at import so a test's times agree with each other.
ANCHOR = dt.datetime.now(dt.UTC).replace(microsecond=0)
MENTORS = {10: "mentor_m", 11: "mentor_n", 12: "mentor_o", 13: "mentor_p"}


def ago(hours: float) -> dt.datetime:
    return ANCHOR - dt.timedelta(hours=hours)


def day(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).date().isoformat()


def recent_days() -> tuple[str, str]:
    """The partition range covering :func:`recent_school` (it may straddle midnight UTC)."""
    return day(ago(4)), day(dt.datetime.now(dt.UTC))


def email(mentor_id: int) -> str:
    return f"{MENTORS[mentor_id]}@example.edu"


def recent_school(url: str, *, course_title: str = "Algebra I", alice_name: str = "Alice Liddell") -> LMSBuilder:
    """Nine events from two to three hours ago, and who mentors whom.

    alice (1) passes "Quadratics quiz" 42/50 (pass 35): started/completed/passed, mentor 10.
    bob (2) fails "Final exam" 50/100 (pass 60): started/completed/failed, mentors 11 and 12.
    carol (3) watches and completes "Intro video": content started/watched/completed, mentor 13
    (mentor 10 mentored carol until ten hours ago: not notified).
    """
    b = LMSBuilder(url)
    (
        b.user(1, "alice", full_name=alice_name)
        .user(2, "bob", full_name="Bob Stone")
        .user(3, "carol", full_name="Carol Danvers")
        .course(100, course_title)
        .exam(200, 100, "Quadratics quiz", max_score=50, pass_score=35)
        .exam(201, 100, "Final exam", max_score=100, pass_score=60)
        .content(300, 100, "Intro video", "video", 600)
        .assign(1, 1, 10, ago(100))
        .assign(2, 2, 11, ago(100))
        .assign(3, 2, 12, ago(100))
        .assign(4, 3, 13, ago(100))
        .assign(5, 3, 10, ago(100), ended_at=ago(10))
    )
    for mentor_id, username in MENTORS.items():
        b.user(mentor_id, username, role="mentor", full_name=f"{username.split('_')[1].upper()} Mentor")
    b.attempt(1, 1, 200, "graded", ago(3), submitted_at=ago(2.5), graded_at=ago(2), score=42)
    b.attempt(2, 2, 201, "graded", ago(3), submitted_at=ago(2.6), graded_at=ago(2.2), score=50)
    b.content_attempt(
        1, 3, 300, "completed", ago(3), completed_at=ago(2.4), progress_percent=95, time_spent_seconds=580
    )
    return b.write()


def add_mentors(server: FakeZulip, *mentor_ids: int) -> dict[int, int]:
    """Register mentors on the fake server; returns LMS id -> Zulip user id."""
    return {m: server.add_user(email(m), MENTORS[m].title()).user_id for m in mentor_ids or MENTORS}


def fast_zulip(server: FakeZulip | None = None, **overrides: object) -> ZulipResource:
    """A Zulip resource for ``server`` with millisecond backoffs (``site`` etc. can be overridden)."""
    options: dict[str, object] = {
        "request_timeout_seconds": 5.0,
        "backoff_seconds": 0.01,
        "max_backoff_seconds": 0.05,
        "max_retry_after_seconds": 1.0,
    }
    if server is not None:
        options.update(site=server.url, email=server.email, api_key=server.api_key)
    options.update(overrides)
    return ZulipResource(**options)
