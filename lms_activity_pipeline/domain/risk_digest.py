"""The at-risk digest: when a mentor is due one, and its text (pure: no clock, no database).

One digest per mentor per course per ``student_risk`` day: the students flagged ``high`` and ``medium``
with their reasons in plain words (new since the last digest marked), the students resolved since the
last digest, and a good-news line (students on track, with a streak).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from lms_activity_pipeline.domain.messages import DIGEST_LIMIT, escape_inline

IMMEDIATE, DAILY, WEEKLY, OFF = "immediate", "daily", "weekly", "off"
#: A mentor's notification preference (its frequency) as an at-risk digest cadence: flags are daily, so
#: ``hourly`` is ``immediate`` (each flag once, the day it is computed); ``off`` sends no digest.
CADENCE_OF_PREFERENCE = {"immediate": IMMEDIATE, "hourly": IMMEDIATE, "daily": DAILY, "weekly": WEEKLY, "off": OFF}


def cadence(default: str, course_id: int, course_frequency: dict[int, str], all_frequency: str | None) -> str:
    """The digest cadence for one course of a mentor: their course preference, else their preference for
    all students, else ``default`` (``LMS_RISK_DIGEST_FREQUENCY``). Student-scoped preferences do not apply
    (a digest covers a course)."""
    chosen = course_frequency.get(course_id, all_frequency)
    return default if chosen is None else CADENCE_OF_PREFERENCE[chosen]


#: What a digest row told about a student who was flagged in the last digest and no longer is.
RESOLVED = "resolved"
#: Reactions the digest asks for: 👍 useful, 👎 wrongly flagged (Zulip's unicode emoji codes).
USEFUL, WRONGLY_FLAGGED = "useful", "wrongly_flagged"
REACTION_LABELS = {"1f44d": USEFUL, "1f44e": WRONGLY_FLAGGED}
LEVEL_HEADINGS = {"high": "🔴 **High risk**", "medium": "🟠 **Medium risk**"}


def is_due(frequency: str, last_sent_at: dt.datetime | None, now: dt.datetime, timezone: str) -> bool:
    """Is a mentor whose last at-risk digest went out at ``last_sent_at`` due another one ``now``?

    ``immediate``: always (each flag is still told once per day); ``daily``: not yet today (in
    ``timezone``); ``weekly``: not in the last 7 days; ``off``: never. A mentor never told anything is due.
    """
    if frequency not in (IMMEDIATE, DAILY, WEEKLY, OFF):
        raise ValueError(f"unknown digest frequency {frequency!r}: use immediate, daily or weekly")
    if frequency == OFF:
        return False
    if last_sent_at is None or frequency == IMMEDIATE:
        return True
    if frequency == DAILY:
        zone = ZoneInfo(timezone)
        return last_sent_at.astimezone(zone).date() < now.astimezone(zone).date()
    return now - last_sent_at >= dt.timedelta(days=7)


@dataclass(frozen=True)
class DigestStudent:
    """A student in a digest: level (``high``/``medium``/``resolved``), whether new since the last digest."""

    student_id: int
    name: str | None
    level: str
    reasons: Sequence[dict[str, Any]] = ()
    new: bool = False


@dataclass(frozen=True)
class Digest:
    """One mentor's digest for one course and day."""

    course_title: str | None
    as_of: dt.date
    students: Sequence[DigestStudent]
    on_track: Sequence[tuple[str | None, int]] = field(default_factory=list)  # (name, streak days)


def _name(name: str | None, student_id: int) -> str:
    return escape_inline(name) or f"student {student_id}"


def render_digest(digest: Digest, *, limit: int = DIGEST_LIMIT) -> str:
    """The digest's text in Zulip markdown; untrusted names and titles escaped; at most ``limit`` characters
    (students past it are counted, not listed)."""
    course = escape_inline(digest.course_title) or "your course"
    flagged = [s for s in digest.students if s.level in LEVEL_HEADINGS]
    resolved = [s for s in digest.students if s.level == RESOLVED]
    lines = [f"**Students at risk in {course}** (as of {digest.as_of.isoformat()})"]
    if not flagged:
        lines.append("Nobody is flagged at the moment.")
    tail = _tail(digest, resolved)
    for level, heading in LEVEL_HEADINGS.items():
        group = [s for s in flagged if s.level == level]
        if not group:
            continue
        lines.append(heading)
        for i, student in enumerate(group):
            why = "; ".join(escape_inline(r.get("detail"), max_length=200) for r in student.reasons) or "flagged"
            line = f"- {_name(student.name, student.student_id)}{' (new)' if student.new else ''}: {why}"
            if len("\n".join([*lines, line, *tail])) > limit - 80:
                lines.append(f"- … and {len(group) - i} more (see `lms-activity risk`)")
                break
            lines.append(line)
    return "\n".join([*lines, *tail])


def _tail(digest: Digest, resolved: Sequence[DigestStudent]) -> list[str]:
    lines = []
    if resolved:
        names = ", ".join(_name(s.name, s.student_id) for s in resolved[:30])
        more = f" and {len(resolved) - 30} more" if len(resolved) > 30 else ""
        lines.append(f"✅ No longer at risk since the last digest: {names}{more}")
    if digest.on_track:
        shown = ", ".join(f"{_name(n, 0)} ({d} days)" for n, d in digest.on_track[:10])
        more = f" and {len(digest.on_track) - 10} more" if len(digest.on_track) > 10 else ""
        count = len(digest.on_track)
        lines.append(
            f"🌟 Good news: {count} student{'s' if count != 1 else ''} on track, active day after day: {shown}{more}"
        )
    lines.append("Was this useful? React 👍 if so, 👎 if someone here is wrongly flagged.")
    return lines


def plan_enqueue(
    flagged: pd.DataFrame,
    previous: pd.DataFrame,
    due: Callable[[int, int], bool],
    as_of: dt.date,
) -> pd.DataFrame:
    """The rows a digest of day ``as_of`` tells, for the (mentor, course) pairs ``due`` says are due.

    ``flagged``: the day's high/medium rows (mentor_id, student_id, course_id, risk_level); ``previous``:
    the students flagged in each (mentor, course)'s last digest. Flagged students are ``is_new`` when the
    last digest did not flag them; students it flagged who are no longer flagged come as ``resolved``.
    """
    columns = ["mentor_id", "student_id", "course_id", "as_of", "risk_level", "is_new"]
    keys = ["mentor_id", "course_id"]
    before = {
        (int(m), int(s), int(c))
        for m, s, c in previous[["mentor_id", "student_id", "course_id"]].itertuples(index=False)
    }
    now = {
        (int(m), int(s), int(c))
        for m, s, c in flagged[["mentor_id", "student_id", "course_id"]].itertuples(index=False)
    }
    rows = [
        (m, s, c, as_of, str(level), (m, s, c) not in before)
        for m, s, c, level in flagged[["mentor_id", "student_id", "course_id", "risk_level"]].itertuples(index=False)
    ]
    rows += [(m, s, c, as_of, RESOLVED, False) for m, s, c in sorted(before - now)]
    out = pd.DataFrame(rows, columns=columns)
    if out.empty:
        return out
    pairs = out[keys].drop_duplicates()
    wanted = {(int(m), int(c)) for m, c in pairs.itertuples(index=False) if due(int(m), int(c))}
    mask = [(int(m), int(c)) in wanted for m, c in out[keys].itertuples(index=False)]
    return out[mask].sort_values(["mentor_id", "course_id", "student_id"]).reset_index(drop=True)
