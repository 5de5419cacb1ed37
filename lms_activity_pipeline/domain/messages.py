"""Zulip message texts for mentors (docs/notifications.md): one rich DM per event, or a digest.

Pure functions: no Dagster, no database, no Zulip client. Untrusted text
(student names, course and activity titles, content types) always goes
through :func:`escape_inline`, so it renders as plain text and cannot
mention, link or format anything.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES, EXAM_EVENT_TYPES, EventType
from lms_activity_pipeline.domain.notification_event import NotificationEvent
from lms_activity_pipeline.domain.text import has_visible_text

#: Zulip truncates longer messages (server setting ``MAX_MESSAGE_LENGTH``).
ZULIP_MAX_MESSAGE_LENGTH = 10_000
#: Default size of one digest part, safely below Zulip's limit.
DIGEST_LIMIT = 9_000
#: Untrusted values longer than this many characters are shortened with "…".
MAX_FIELD_LENGTH = 200

EMOJI: Mapping[str, str] = {
    EventType.EXAM_STARTED: "📝",
    EventType.EXAM_COMPLETED: "🏁",
    EventType.EXAM_PASSED: "✅",
    EventType.EXAM_FAILED: "❌",
    EventType.CONTENT_STARTED: "📚",
    EventType.CONTENT_WATCHED: "🎬",
    EventType.CONTENT_COMPLETED: "🎓",
}
VERB: Mapping[str, str] = {
    EventType.EXAM_STARTED: "started the exam",
    EventType.EXAM_COMPLETED: "submitted the exam",
    EventType.EXAM_PASSED: "passed the exam",
    EventType.EXAM_FAILED: "failed the exam",
    EventType.CONTENT_STARTED: "started",
    EventType.CONTENT_WATCHED: "watched",
    EventType.CONTENT_COMPLETED: "completed",
}
LABEL: Mapping[str, str] = {
    EventType.EXAM_STARTED: "exam started",
    EventType.EXAM_COMPLETED: "exam submitted",
    EventType.EXAM_PASSED: "exam passed",
    EventType.EXAM_FAILED: "exam failed",
    EventType.CONTENT_STARTED: "content started",
    EventType.CONTENT_WATCHED: "content watched",
    EventType.CONTENT_COMPLETED: "content completed",
}
#: Digest order of types: failures first, then the canonical order.
TYPE_ORDER: tuple[str, ...] = (
    EventType.EXAM_FAILED.value,
    *tuple(t for t in ALL_EVENT_TYPES if t != EventType.EXAM_FAILED),
)
GRADED_TYPES = (EventType.EXAM_PASSED.value, EventType.EXAM_FAILED.value)

# --- escaping -------------------------------------------------------------------

ZWSP = "\u200b"

#: The last line of every message under preferences: how a mentor changes how often they hear from the bot.
FOOTER = (
    "⚙️ Too many or too few of these? Ask an LMS admin to run "
    "`lms-activity prefs set <your LMS username> --frequency immediate|hourly|daily|weekly|off`."
)
URGENT_MARK = "🚨 **urgent**"


@dataclass(frozen=True)
class MessageExtras:
    """What preferences and rules add to a mentor's messages (issue 12): events marked urgent (by
    ``event_id``), the start of the period a scheduled digest covers (shown in ``timezone``), and the
    footer line of digests."""

    urgent: frozenset[int] = frozenset()
    since: dt.datetime | None = None
    timezone: str = "UTC"
    footer: bool = False


def format_since(since: dt.datetime, now: dt.datetime, timezone: str) -> str:
    """``since Monday 18:00`` within the last week (local time), else ``since 2026-11-20 18:00``."""
    from zoneinfo import ZoneInfo

    local = since.astimezone(ZoneInfo(timezone))
    if dt.timedelta(0) <= now - since < dt.timedelta(days=6):
        return f"since {local:%A %H:%M}"
    return f"since {local:%Y-%m-%d %H:%M}"


#: Characters that start Zulip syntax (mentions, channel links, <time:>, links,
#: $$tex$$, !avatar()); a zero-width space after each breaks the syntax
#: invisibly. "]" breaks "](" of inline links.
_BREAK_AFTER = frozenset("@#<[]$!")
#: Markdown delimiters replaced by look-alikes (backslash escapes don't work in Zulip).
_LOOKALIKE = str.maketrans(
    {
        "`": "\u02cb",  # ˋ modifier letter grave accent: no code spans or fences
        "*": "\u2217",  # ∗ asterisk operator: no emphasis, no **mention** bodies
        "_": "\u02cd",  # ˍ modifier letter low macron: no __emphasis__
        "~": "\u223c",  # ∼ tilde operator: no ~~strike~~ or ~~~ fences
        "|": "\u2223",  # ∣ divides: no tables or spoilers
    }
)
#: Bidi overrides/isolates can reorder the surrounding text; drop them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: Text that would start a block (quote, header, list) at the start of a line.
_BLOCK_START = re.compile(r"[>#+\-=]|\d+[.)]")
#: Where Zulip would auto-link or expand a bare value: "http://x", "www.x.org", "evil.com"
#: (a dot inside a word) and ":emoji:" / "x://" (a colon before a non-space).
_AUTOLINK_JOINTS = re.compile(r"(?<=\w)\.(?=\w)|:(?=\S)")
_SPACES = re.compile(r"\s+")


def _single_line(text: str) -> str:
    """Newlines, tabs and control characters become spaces; runs of spaces collapse."""
    chars = []
    for ch in text:
        if ch in _BIDI_CONTROLS:
            continue
        category = unicodedata.category(ch)
        chars.append(" " if category in ("Cc", "Zl", "Zp") else ch)
    return _SPACES.sub(" ", "".join(chars)).strip()


def escape_inline(text: object, *, max_length: int | None = MAX_FIELD_LENGTH) -> str:
    """Make untrusted ``text`` render as plain, single-line text inside Zulip markdown.

    Newlines and control characters are removed, a zero-width space follows
    ``@ # < [ ] $ !``, a dot inside a word and a colon before a non-space (so
    bare URLs, domains and ``:emoji:`` stay text), markdown delimiters (`` ` * _ ~ | ``) become look-alike
    characters and a leading block marker is defused. Letters, accents, emoji
    and apostrophes are kept. Text longer than ``max_length`` is shortened
    with "…". ``None``, and text that would show nothing (only whitespace,
    zero-width, bidi or control characters), give an empty string, so callers'
    fallbacks apply.
    """
    if not has_visible_text(text):
        return ""
    clean = _single_line(str(text))
    if max_length is not None and len(clean) > max_length:
        clean = clean[: max(max_length - 1, 0)].rstrip() + "…"
    clean = clean.translate(_LOOKALIKE)
    out = "".join(ch + ZWSP if ch in _BREAK_AFTER else ch for ch in clean)
    out = _AUTOLINK_JOINTS.sub(lambda m: m.group(0) + ZWSP, out)
    if _BLOCK_START.match(out):
        out = ZWSP + out
    return out


# --- number, time and duration formatting --------------------------------------


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` when missing or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def format_number(value: Any, decimals: int = 2) -> str | None:
    """``42`` not ``42.0``; at most ``decimals`` decimals; ``None`` when not a number."""
    number = _number(value)
    if number is None:
        return None
    text = f"{round(number, decimals):.{decimals}f}".rstrip("0").rstrip(".") if decimals else f"{number:.0f}"
    return "0" if text in ("-0", "") else text


def format_duration(seconds: Any) -> str | None:
    """``45 s``, ``12 min``, ``1 h 5 min``, ``2 h``; ``None`` when missing or not positive."""
    number = _number(seconds)
    if number is None or number <= 0:
        return None
    if number < 60:
        return f"{round(number)} s"
    minutes = round(number / 60)
    hours, minutes = divmod(minutes, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def format_time(value: dt.datetime | None) -> str | None:
    """``YYYY-MM-DD HH:MM UTC``; a naive time is taken to be UTC already."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _fraction(part: Any, whole: Any, percent: Any = None) -> str | None:
    """``42/50 (84%)``, or just ``42`` when ``whole`` is unknown."""
    part_text = format_number(part)
    if part_text is None:
        return None
    whole_num = _number(whole)
    if whole_num is None or whole_num <= 0:
        return part_text
    pct = _number(percent)
    if pct is None:
        pct = _number(part) / whole_num * 100  # type: ignore[operator]
    return f"{part_text}/{format_number(whole_num)} ({format_number(pct, 1)}%)"


# --- the facts of one event -----------------------------------------------------


def _emoji(event_type: str) -> str:
    return EMOJI.get(event_type, "•")


def _score_text(meta: Mapping[str, Any]) -> str | None:
    """``42/50 (84%), pass mark 35/50 (70%)`` (parts omitted when unknown)."""
    score = _fraction(meta.get("score"), meta.get("max_score"), meta.get("percentage"))
    pass_mark = _fraction(meta.get("pass_score"), meta.get("max_score"))
    if pass_mark is not None:
        pass_mark = f"pass mark {pass_mark}"
    return ", ".join(p for p in (score, pass_mark) if p) or None


def _attempt_text(meta: Mapping[str, Any]) -> str | None:
    number = format_number(meta.get("attempt_number"), 0)
    return f"attempt {number}" if number is not None else None


def _is_exam(event: NotificationEvent) -> bool:
    return event.event_type in EXAM_EVENT_TYPES or event.event_key.startswith("exam:")


def _detail_parts(event: NotificationEvent) -> list[str]:
    """The short facts of an event, in reading order (missing facts omitted)."""
    meta = event.metadata or {}
    parts: list[str] = []
    if _is_exam(event):
        if event.event_type in GRADED_TYPES and (score := _score_text(meta)):
            parts.append(score)
        if attempt := _attempt_text(meta):
            parts.append(attempt)
        if event.event_type != EventType.EXAM_STARTED and (spent := format_duration(meta.get("time_spent_seconds"))):
            parts.append(f"time spent {spent}")
    else:
        if content_type := escape_inline(meta.get("content_type"), max_length=40):
            parts.append(content_type)
        if (progress := format_number(meta.get("progress_percent"), 1)) is not None:
            parts.append(f"progress {progress}%")
        if spent := format_duration(meta.get("time_spent_seconds")):
            parts.append(f"time spent {spent}")
    return parts


def _activity(event: NotificationEvent) -> str:
    return escape_inline(event.activity_title) or "(untitled activity)"


# --- one message per event ------------------------------------------------------


def render_message(event: NotificationEvent, extras: MessageExtras | None = None) -> str:
    """:func:`render_event_message`, marked urgent if ``extras`` say so (the footer is for digests)."""
    text = render_event_message(event)
    if extras is None:
        return text
    return f"{URGENT_MARK} · {text}" if event.event_id in extras.urgent else text


def render_event_message(event: NotificationEvent) -> str:
    """One rich DM about one event, e.g.::

    ✅ **Ana López** passed the exam **Midterm** (attempt 2)
    Course: Algebra I
    Score: 42/50 (84%), pass mark 35/50 (70%)
    Time spent: 35 min
    When: 2024-05-01 14:03 UTC
    """
    meta = event.metadata or {}
    verb = VERB.get(event.event_type) or escape_inline(event.event_type)
    headline = f"{_emoji(event.event_type)} **{escape_inline(event.student_name)}** {verb} **{_activity(event)}**"
    lines = [headline]
    if course := escape_inline(event.course_title):
        lines.append(f"Course: {course}")
    if _is_exam(event):
        if attempt := _attempt_text(meta):
            lines[0] += f" ({attempt})"
        if event.event_type in GRADED_TYPES and (score := _score_text(meta)):
            lines.append(f"Score: {score}")
        if event.event_type != EventType.EXAM_STARTED and (spent := format_duration(meta.get("time_spent_seconds"))):
            lines.append(f"Time spent: {spent}")
    elif facts := _detail_parts(event):
        lines.append("Content: " + " · ".join(facts))
    if when := format_time(event.timestamp):
        lines.append(f"When: {when}")
    return "\n".join(lines)


# --- digests --------------------------------------------------------------------


def _type_rank(event_type: str) -> int:
    return TYPE_ORDER.index(event_type) if event_type in TYPE_ORDER else len(TYPE_ORDER)


def _timestamp_key(event: NotificationEvent) -> float:
    ts = event.timestamp
    if ts is None:
        return math.inf
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    return ts.timestamp()


#: How far an attempt has got: a digest shows each attempt once, in its latest state.
LIFECYCLE: Mapping[str, int] = {
    EventType.EXAM_STARTED: 0,
    EventType.EXAM_COMPLETED: 1,
    EventType.EXAM_PASSED: 2,
    EventType.EXAM_FAILED: 2,
    EventType.CONTENT_STARTED: 0,
    EventType.CONTENT_WATCHED: 1,
    EventType.CONTENT_COMPLETED: 2,
}


@dataclass(frozen=True)
class Folded:
    """One digest line: an attempt (exam or content) in its latest state, and every event it stands for."""

    event: NotificationEvent
    event_ids: tuple[int, ...]


def attempt_key(event: NotificationEvent) -> str:
    """``exam:<Attempts.id>`` or ``content:<ContentAttempts.id>`` from the event key (else the key itself)."""
    source, _, rest = event.event_key.partition(":")
    attempt = rest.rpartition(":")[0]
    return f"{source}:{attempt}" if attempt else event.event_key


def fold_attempts(events: Iterable[NotificationEvent]) -> list[Folded]:
    """The events grouped per attempt, each shown as its latest event (furthest state, then newest)."""
    groups: dict[tuple[int, str], list[NotificationEvent]] = {}
    for event in events:
        groups.setdefault((event.student_id, attempt_key(event)), []).append(event)
    folded = []
    for items in groups.values():
        latest = max(items, key=lambda e: (LIFECYCLE.get(e.event_type, 0), _timestamp_key(e), e.event_id))
        folded.append(Folded(latest, tuple(sorted(e.event_id for e in items))))
    return folded


def _digest_line(event: NotificationEvent, urgent: Collection[int] = frozenset()) -> str:
    """``- ❌ failed the exam Midterm — Algebra I · 30/50 (60%) … · 2024-05-01 14:03 UTC``."""
    verb = VERB.get(event.event_type) or escape_inline(event.event_type)
    mark = f"{URGENT_MARK} · " if event.event_id in urgent else ""
    text = f"- {mark}{_emoji(event.event_type)} {verb} **{_activity(event)}**"
    if course := escape_inline(event.course_title):
        text += f" — {course}"
    facts = _detail_parts(event)
    if when := format_time(event.timestamp):
        facts.append(when)
    return " · ".join([text, *facts])


def _header(events: Sequence[NotificationEvent], lines: Sequence[Folded], students: int) -> list[str]:
    """The title and the count of attempts per latest state."""
    counts: dict[str, int] = {}
    for entry in lines:
        counts[entry.event.event_type] = counts.get(entry.event.event_type, 0) + 1
    summary = " · ".join(
        f"{_emoji(t)} {n} {LABEL.get(t) or escape_inline(t)}"
        for t, n in sorted(counts.items(), key=lambda item: (_type_rank(item[0]), item[0]))
    )
    plural = "" if len(events) == 1 else "s"
    noun = "student" if students == 1 else "students"
    return [f"📬 **LMS activity digest**: {len(events)} event{plural} from {students} {noun}", summary]


def _grouped(
    events: Iterable[NotificationEvent], urgent: frozenset[int] = frozenset()
) -> list[tuple[str, list[Folded]]]:
    """(student heading, attempts in their latest state): students with an urgent item, then those who
    failed an exam, first, then by name; within a student urgent items, then failures, then by time."""
    by_student: dict[int, list[NotificationEvent]] = {}
    for event in events:
        by_student.setdefault(event.student_id, []).append(event)
    groups = []
    for student_id, items in by_student.items():
        entries = fold_attempts(items)
        entries.sort(
            key=lambda f: (
                not _is_urgent(f, urgent),
                f.event.event_type != EventType.EXAM_FAILED,
                _timestamp_key(f.event),
                f.event.event_id,
            )
        )
        failed = any(f.event.event_type == EventType.EXAM_FAILED for f in entries)
        pressing = any(_is_urgent(f, urgent) for f in entries)
        name = escape_inline(items[0].student_name)
        noun = "event" if len(items) == 1 else "events"
        key = (not pressing, not failed, name.casefold(), student_id)
        groups.append((key, f"**{name}** ({len(items)} {noun})", entries))
    groups.sort(key=lambda g: g[0])
    return [(heading, entries) for _, heading, entries in groups]


def _is_urgent(entry: Folded, urgent: frozenset[int]) -> bool:
    return any(i in urgent for i in entry.event_ids)


def _fit(line: str, room: int) -> str:
    """``line`` cut to ``room`` characters with "…" (last resort for absurdly small limits)."""
    if room <= 1:
        raise ValueError("digest limit too small for a single line")
    return line if len(line) <= room else line[: room - 1] + "…"


def _pack(
    header: list[str],
    groups: list[tuple[str, list[Folded]]],
    limit: int,
    reserve: int,
    urgent: frozenset[int] = frozenset(),
) -> list[tuple[list[str], list[int]]]:
    """Lines and event ids of each part; ``reserve`` characters of every part are kept for its "(part i/n)" label."""
    continuation = ["📬 **LMS activity digest**"]
    parts: list[tuple[list[str], list[int]]] = []
    current = list(header)
    current_ids: list[int] = []
    size = len("\n".join(current)) + reserve
    fresh = True  # nothing but the header in the current part
    for heading, entries in groups:
        for index, entry in enumerate(entries):
            line = _digest_line(entry.event, entry.event_ids if _is_urgent(entry, urgent) else frozenset())
            block = ["", heading, line] if index == 0 else [line]
            added = sum(len(x) + 1 for x in block)
            if size + added > limit and not fresh:
                parts.append((current, current_ids))
                current, current_ids, fresh = list(continuation), [], True
                size = len(current[0]) + reserve
                block = ["", heading if index == 0 else f"{heading} (continued)", line]
                added = sum(len(x) + 1 for x in block)
            if size + added > limit:  # a single line longer than a whole part
                block[-1] = _fit(block[-1], limit - size - added + len(block[-1]))
                added = sum(len(x) + 1 for x in block)
            current.extend(block)
            current_ids.extend(entry.event_ids)
            size += added
            fresh = False
    parts.append((current, current_ids))
    return parts


@dataclass(frozen=True)
class DigestPart:
    """One message of a digest and the ids of the events it lists."""

    text: str
    event_ids: tuple[int, ...]


def render_digest_parts(
    events: Sequence[NotificationEvent],
    *,
    limit: int = DIGEST_LIMIT,
    extras: MessageExtras | None = None,
    now: dt.datetime | None = None,
) -> list[DigestPart]:
    """One digest of ``events`` for one mentor, split into parts of at most ``limit`` characters.

    A header counts the events per type; events are grouped by student, students
    with a failed exam first, failures first within a student, then by time. Lines
    are never cut across parts; when there are several parts each first line ends
    with ``(part i/n)`` and a student continued from the previous part is repeated
    with "(continued)". Each part carries the ids of the events it lists, so a
    sender can record every event against the message that delivered it.
    """
    if not events:
        return []
    if limit > ZULIP_MAX_MESSAGE_LENGTH:
        raise ValueError(f"limit {limit} is above Zulip's {ZULIP_MAX_MESSAGE_LENGTH}-character message limit")
    extras = extras or MessageExtras()
    urgent = extras.urgent
    groups = _grouped(events, urgent)
    header = _header(events, [entry for _, entries in groups for entry in entries], len(groups))
    if extras.since is not None:
        newest = max((e.timestamp for e in events if e.timestamp is not None), default=extras.since)
        header[0] += f", {format_since(extras.since, now or newest, extras.timezone)}"
    if urgent:
        header[1] = f"{URGENT_MARK}: {sum(e.event_id in urgent for e in events)} · {header[1]}"
    footer = len(FOOTER) + 2 if extras.footer else 0
    parts = _pack(header, groups, limit - footer, reserve=0, urgent=urgent)
    if len(parts) > 1:
        digits = len(str(len(parts)))
        while True:  # the label's width depends on the number of parts
            reserve = len(f" (part {'9' * digits}/{'9' * digits})")
            parts = _pack(header, groups, limit - footer, reserve, urgent)
            if len(str(len(parts))) <= digits:
                break
            digits += 1
        total = len(parts)
        for number, (lines, _ids) in enumerate(parts, start=1):
            lines[0] += f" (part {number}/{total})"
    if extras.footer:
        parts[-1][0].extend(["", FOOTER])
    return [DigestPart("\n".join(lines), tuple(ids)) for lines, ids in parts]


def render_digest(events: Sequence[NotificationEvent], *, limit: int = DIGEST_LIMIT) -> list[str]:
    """The texts of :func:`render_digest_parts`."""
    return [part.text for part in render_digest_parts(events, limit=limit)]


def render_notifications(events: Sequence[NotificationEvent], *, limit: int = DIGEST_LIMIT) -> list[str]:
    """The messages for one mentor: one rich message for one event, else a digest."""
    if not events:
        return []
    if len(events) == 1:
        return [render_event_message(events[0])]
    return render_digest(events, limit=limit)
