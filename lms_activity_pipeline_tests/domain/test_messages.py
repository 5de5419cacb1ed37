"""Message texts (docs/notifications.md): per-event messages, escaping, digests and their splitting."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

import pytest

from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES
from lms_activity_pipeline.domain.messages import (
    FOOTER,
    URGENT_MARK,
    ZWSP,
    MessageExtras,
    escape_inline,
    format_duration,
    format_number,
    render_digest,
    render_digest_parts,
    render_event_message,
    render_notifications,
)
from lms_activity_pipeline.domain.notification_event import NotificationEvent

pytestmark = pytest.mark.unit


WHEN = dt.datetime(2024, 5, 1, 16, 3, 59, tzinfo=dt.timezone(dt.timedelta(hours=2)))
EXAM_META = {
    "student_name": "Ana López",
    "score": 42.0,
    "max_score": 50.0,
    "pass_score": 35.0,
    "percentage": 84.0,
    "attempt_number": 2,
    "time_spent_seconds": 3900,
}
CONTENT_META = {
    "student_name": "Ana López",
    "content_type": "video",
    "progress_percent": 95.0,
    "time_spent_seconds": 720,
    "duration_seconds": 800,
}

#: Live Zulip syntax that must never survive escaping.
DANGEROUS = ["@**", "@_**", "@*", "#**", "](", "<time", "$$", "```", "`", "\n", "~~", "**all", "!avatar("]
INJECTIONS = [
    "@**all** #**general** [x](http://evil)",
    "@_**Silent Sam**",
    "@*admins*",
    "@**everyone** @**channel** @**topic**",
    "#**a>b** #**general>lunch**",
    "Bob\n```\ncode\n```\n> quote\n# Header",
    "<time:2024-05-01T10:00:00Z>",
    "$$x^2$$",
    "*em* **strong** ~~strike~~ __under__ | a | b |",
    "![img](http://evil/x.png) !avatar(boss@example.com)",
    "see http://evil.com/x, https://evil.org or www.evil.net/path",
    "evil.com and mail boss@evil.com :smile: :+1:",
]
#: Zulip's bare-link pattern (zerver/lib/markdown ``get_web_link_regex``, with a few TLDs):
#: a URL with a scheme, a dotted name ending in a TLD, or an e-mail address.
ZULIP_AUTOLINK = re.compile(
    r"""(?<![^\s'"(,:<])(?:https?://[\w.:@-]+?|(?:[\w-]+\.)+(?:com|org|net|edu|io))(?=[/!:;?),.'">]*(?:\Z|\s|/))"""
    r"""|[\w.-]+@[\w.-]+\.\w+""",
)
#: Zulip's emoji shortcode pattern.
ZULIP_EMOJI = re.compile(r":[\w+-]+:")
UNDO_LOOKALIKES = str.maketrans("\u02cb\u2217\u02cd\u223c\u2223", "`*_~|")


def event(event_type: str, *, event_id: int = 1, student_id: int = 7, **overrides: Any) -> NotificationEvent:
    is_exam = event_type.startswith("exam")
    fields: dict[str, Any] = {
        "event_id": event_id,
        "event_key": f"{'exam' if is_exam else 'content'}:{event_id}:{event_type}",
        "event_type": event_type,
        "student_id": student_id,
        "student_username": f"student{student_id}",
        "timestamp": WHEN,
        "activity_title": "Midterm" if is_exam else "Intro to Limits",
        "course_title": "Algebra I",
        "metadata": dict(EXAM_META if is_exam else CONTENT_META),
    }
    fields.update(overrides)
    return NotificationEvent(**fields)


def assert_no_live_syntax(text: str) -> None:
    for bad in DANGEROUS:
        if bad == "\n":
            continue  # messages are multi-line; escaped values are checked separately
        assert bad not in text, (bad, text)


# --- escape_inline ----------------------------------------------------------------


@pytest.mark.parametrize("raw", INJECTIONS)
def test_escape_inline_leaves_no_live_syntax(raw: str) -> None:
    escaped = escape_inline(raw)
    for bad in DANGEROUS:
        assert bad not in escaped, (bad, escaped)
    assert not ZULIP_AUTOLINK.search(escaped), escaped
    assert not ZULIP_EMOJI.search(escaped), escaped
    assert not re.search(r"[\x00-\x1f\x7f]", escaped)
    # Only zero-width spaces and look-alike characters differ: the text reads the same.
    assert escaped.replace(ZWSP, "").translate(UNDO_LOOKALIKES) == " ".join(raw.split())


def test_escape_inline_keeps_normal_text() -> None:
    for text in ["José Ñúñez-Ørsted", "Zoë O'Brien", "Chapter 3: Limits 🎉", "Введение в анализ", "50% off, (really)"]:
        assert escape_inline(text) == text


def test_escape_inline_single_line_and_controls() -> None:
    assert escape_inline("a\nb\r\nc\td\x00e\u2028f\u202eg") == "a b c d e fg"
    assert escape_inline("  spaced   out  ") == "spaced out"
    assert escape_inline(None) == ""
    assert escape_inline(12) == "12"


def test_escape_inline_defuses_block_starts_and_long_text() -> None:
    for raw in ["> quote", "# header", "- item", "+ item", "1. item"]:
        assert escape_inline(raw).startswith(ZWSP)
    long = escape_inline("x" * 1000)
    assert len(long) == 200 and long.endswith("…")
    assert escape_inline("x" * 1000, max_length=None) == "x" * 1000


def test_format_helpers() -> None:
    assert [format_number(v) for v in (42.0, 42, 42.5, 1 / 3, None, "n/a", float("nan"), True)] == [
        "42",
        "42",
        "42.5",
        "0.33",
        None,
        None,
        None,
        None,
    ]
    assert format_number("35.0") == "35"
    assert [format_duration(s) for s in (0, None, 45, 720, 3900, 7200, 7170)] == [
        None,
        None,
        "45 s",
        "12 min",
        "1 h 5 min",
        "2 h",
        "2 h",
    ]


# --- one message per event --------------------------------------------------------


def test_exam_passed_message() -> None:
    text = render_event_message(event("exam_passed"))
    assert text.splitlines() == [
        "✅ **Ana López** passed the exam **Midterm** (attempt 2)",
        "Course: Algebra I",
        "Score: 42/50 (84%), pass mark 35/50 (70%)",
        "Time spent: 1 h 5 min",
        "When: 2024-05-01 14:03 UTC",
    ]


def test_exam_failed_message_computes_missing_percentage() -> None:
    meta = {**EXAM_META, "score": 30, "percentage": None, "attempt_number": 3}
    text = render_event_message(event("exam_failed", metadata=meta))
    assert text.startswith("❌ **Ana López** failed the exam **Midterm** (attempt 3)")
    assert "Score: 30/50 (60%), pass mark 35/50 (70%)" in text


@pytest.mark.parametrize(
    ("event_type", "emoji", "expected", "absent"),
    [
        ("exam_started", "📝", ["started the exam **Midterm** (attempt 2)"], ["Score", "Time spent", "42/50"]),
        ("exam_completed", "🏁", ["submitted the exam **Midterm** (attempt 2)", "Time spent: 1 h 5 min"], ["Score"]),
        ("exam_passed", "✅", ["Score: 42/50 (84%)", "pass mark 35/50 (70%)"], []),
        ("exam_failed", "❌", ["Score: 42/50 (84%)", "attempt 2"], []),
        (
            "content_started",
            "📚",
            ["started **Intro to Limits**", "Content: video · progress 95% · time spent 12 min"],
            [],
        ),
        ("content_watched", "🎬", ["watched **Intro to Limits**", "progress 95%"], ["Score"]),
        ("content_completed", "🎓", ["completed **Intro to Limits**", "time spent 12 min"], ["attempt"]),
    ],
)
def test_every_event_type(event_type: str, emoji: str, expected: list[str], absent: list[str]) -> None:
    text = render_event_message(event(event_type))
    assert text.startswith(f"{emoji} **Ana López** ")
    assert "Course: Algebra I" in text
    assert text.endswith("When: 2024-05-01 14:03 UTC")
    for part in expected:
        assert part in text
    for part in absent:
        assert part not in text


def test_missing_metadata_is_omitted() -> None:
    bare = event("exam_passed", metadata={}, activity_title=None, course_title=None, student_username="ana")
    text = render_event_message(bare)
    assert text.splitlines() == ["✅ **ana** passed the exam **(untitled activity)**", "When: 2024-05-01 14:03 UTC"]
    partial = event("content_completed", metadata={"progress_percent": None, "time_spent_seconds": 0})
    assert "None" not in render_event_message(partial)
    assert "nan" not in render_event_message(event("exam_failed", metadata={"score": float("nan"), "max_score": 50}))


def test_score_without_max_and_naive_time() -> None:
    naive = dt.datetime(2024, 5, 1, 9, 5)
    text = render_event_message(event("exam_passed", metadata={"score": 7.5}, timestamp=naive))
    assert "Score: 7.5\n" in text
    assert text.endswith("When: 2024-05-01 09:05 UTC")


def test_injection_in_every_untrusted_field() -> None:
    for raw in INJECTIONS:
        for type_ in ("exam_failed", "content_watched"):
            meta = {**(EXAM_META if type_.startswith("exam") else CONTENT_META), "student_name": raw}
            if type_ == "content_watched":
                meta["content_type"] = raw
            ev = event(type_, metadata=meta, activity_title=raw, course_title=raw)
            for text in [render_event_message(ev), *render_digest([ev, ev])]:
                assert_no_live_syntax(text)
                # The only bold markers are ours: one pair around the name, one around the title.
                assert text.count("**") % 2 == 0


def test_newlines_in_names_cannot_start_blocks() -> None:
    ev = event("exam_passed", metadata={**EXAM_META, "student_name": "Bob\n```\n> quote\n# Header"})
    headline, *rest = render_event_message(ev).splitlines()
    assert headline.startswith("✅ **Bob ˋˋˋ > quote #")
    assert all(line.startswith(("Course:", "Score:", "Time spent:", "When:")) for line in rest)


#: Names that are there for the database and blank on screen.
INVISIBLE_NAMES = [
    "",
    "   \t ",
    "\u200b\u200b\u200b",  # zero-width spaces
    "\u200e\u200f\u202e\u2066\u2069",  # bidi marks, override, isolates
    "\u00a0\u3000\u2028\ufeff",  # no-break and ideographic spaces, line separator, BOM
    "\x00\x07\x1b\x7f",  # control characters
    "\u3164\u115f\u2800\u034f\ufe0f",  # Hangul fillers, braille blank, CGJ, variation selector
]


@pytest.mark.parametrize("name", INVISIBLE_NAMES)
def test_a_name_that_shows_nothing_falls_back_to_the_username(name: str) -> None:
    ev = event("exam_passed", metadata={**EXAM_META, "student_name": name}, student_username="ana_l")
    assert render_event_message(ev).startswith("✅ **ana\u02cdl** passed the exam **Midterm**")
    [digest] = render_digest(
        [ev, event("exam_failed", event_id=2, metadata={**EXAM_META, "student_name": name}, student_username="ana_l")]
    )
    assert "**ana\u02cdl** (2 events)" in digest.splitlines()


@pytest.mark.parametrize("name", INVISIBLE_NAMES)
def test_a_username_that_shows_nothing_either_gives_student_and_the_id(name: str) -> None:
    ev = event("exam_passed", metadata={**EXAM_META, "student_name": name}, student_username=name, student_id=42)
    assert render_event_message(ev).startswith("✅ **student 42** passed the exam **Midterm**")
    assert escape_inline(name) == ""


def test_invisible_titles_get_the_untitled_fallback_and_visible_names_are_kept() -> None:
    ev = event("exam_passed", activity_title="\u200b \u200f", course_title="\u2066\u2069")
    assert render_event_message(ev).splitlines()[:2] == [
        "✅ **Ana López** passed the exam **(untitled activity)** (attempt 2)",
        "Score: 42/50 (84%), pass mark 35/50 (70%)",
    ]
    kept = event("exam_passed", metadata={**EXAM_META, "student_name": "\u200b李\u200b"})
    assert render_event_message(kept).startswith("✅ **\u200b李\u200b** passed")


# --- digests ----------------------------------------------------------------------


def digest_events() -> list[NotificationEvent]:
    def named(name: str) -> dict[str, Any]:
        return {**EXAM_META, "student_name": name}

    return [
        event("content_started", event_id=1, student_id=1, metadata={**CONTENT_META, "student_name": "Zoe"}),
        event("exam_passed", event_id=2, student_id=2, metadata=named("Adam")),
        event("exam_started", event_id=3, student_id=3, metadata=named("Yara"), timestamp=WHEN - dt.timedelta(hours=1)),
        event("exam_failed", event_id=4, student_id=3, metadata=named("Yara")),
        event(
            "exam_completed", event_id=5, student_id=3, metadata=named("Yara"), timestamp=WHEN - dt.timedelta(hours=2)
        ),
        event("content_watched", event_id=6, student_id=1, metadata={**CONTENT_META, "student_name": "Zoe"}),
    ]


def test_digest_header_grouping_and_order() -> None:
    [text] = render_digest(digest_events())
    lines = text.splitlines()
    assert lines[0] == "📬 **LMS activity digest**: 6 events from 3 students"
    assert lines[1] == (
        "❌ 1 exam failed · 📝 1 exam started · 🏁 1 exam submitted · ✅ 1 exam passed"
        " · 📚 1 content started · 🎬 1 content watched"
    )
    headings = [line for line in lines if line.startswith("**")]
    # Students with a failed exam first, then by name.
    assert headings == ["**Yara** (3 events)", "**Adam** (1 event)", "**Zoe** (2 events)"]
    yara = lines[lines.index("**Yara** (3 events)") + 1 : lines.index("**Yara** (3 events)") + 4]
    # Failures first, then by time.
    assert [line.split()[1] for line in yara] == ["❌", "🏁", "📝"]
    assert yara[0] == (
        "- ❌ failed the exam **Midterm** — Algebra I · 42/50 (84%), pass mark 35/50 (70%) · attempt 2"
        " · time spent 1 h 5 min · 2024-05-01 14:03 UTC"
    )
    assert len(text) <= 9000


def test_render_notifications_picks_single_or_digest() -> None:
    events = digest_events()
    assert render_notifications([]) == []
    assert render_notifications(events[:1]) == [render_event_message(events[0])]
    assert render_notifications(events) == render_digest(events)
    assert render_digest([]) == []


def test_large_digest_splits_without_losing_or_cutting_lines() -> None:
    events = [
        event(
            ALL_EVENT_TYPES[i % 7],
            event_id=i,
            student_id=i % 37,
            metadata={**(EXAM_META if i % 7 < 4 else CONTENT_META), "student_name": f"Student {i % 37}"},
            activity_title=f"Activity {i:04d}",
        )
        for i in range(2000)
    ]
    parts = render_digest(events)
    total = len(parts)
    assert total > 1
    assert all(len(part) <= 9000 for part in parts)
    for number, part in enumerate(parts, start=1):
        assert part.splitlines()[0].endswith(f"(part {number}/{total})")
    assert parts[0].startswith("📬 **LMS activity digest**: 2000 events from 37 students")
    event_lines = [line for part in parts for line in part.splitlines() if line.startswith("- ")]
    assert len(event_lines) == 2000
    assert sorted(re.search(r"Activity (\d{4})", line).group(1) for line in event_lines) == [
        f"{i:04d}" for i in range(2000)
    ]
    # A student cut by a part boundary is named again at the top of the next part.
    for part in parts[1:]:
        assert part.splitlines()[2].startswith("**Student ")


@pytest.mark.parametrize("limit", [300, 1000, 2500])
def test_digest_respects_small_limits(limit: int) -> None:
    events = [
        dataclasses.replace(e, event_id=e.event_id + 10 * copy, event_key=f"{e.event_key}:{copy}")
        for copy in range(20)
        for e in digest_events()
    ]
    parts = render_digest_parts(events, limit=limit)
    assert all(len(part.text) <= limit for part in parts)
    assert sorted(i for part in parts for i in part.event_ids) == sorted(e.event_id for e in events)


def test_digest_limit_above_zulip_maximum_is_refused() -> None:
    with pytest.raises(ValueError, match="10000"):
        render_digest(digest_events(), limit=20_000)


# --- folding, urgent items, period and footer (mentor preferences and rules) -----------------------


def attempt(attempt_id: int, *types: str, student_id: int = 7, first_id: int = 100) -> list[NotificationEvent]:
    return [
        event(
            t,
            event_id=first_id + n,
            student_id=student_id,
            event_key=f"{'exam' if t.startswith('exam') else 'content'}:{attempt_id}:{t}",
            timestamp=WHEN + dt.timedelta(minutes=n),
            metadata={**(EXAM_META if t.startswith("exam") else CONTENT_META), "student_name": f"S{student_id}"},
        )
        for n, t in enumerate(types)
    ]


def test_a_digest_folds_an_attempt_into_one_line_in_its_latest_state() -> None:
    events = [
        *attempt(1, "exam_started", "exam_completed", "exam_passed", first_id=100),
        *attempt(2, "exam_started", first_id=200),  # still open: a started-only line
        *attempt(3, "content_started", "content_watched", "content_completed", first_id=300),
    ]
    [part] = render_digest_parts(events)
    lines = [line for line in part.text.splitlines() if line.startswith("- ")]
    assert len(lines) == 3
    assert any(line.startswith("- ✅ passed the exam **Midterm** — Algebra I · 42/50 (84%)") for line in lines)
    assert any(line.startswith("- 📝 started the exam **Midterm**") for line in lines)
    assert any(line.startswith("- 🎓 completed **Intro to Limits**") for line in lines)
    assert part.text.splitlines()[0] == "📬 **LMS activity digest**: 7 events from 1 student"
    assert sorted(part.event_ids) == sorted(e.event_id for e in events)  # every folded event is carried


def test_urgent_items_come_first_marked_and_the_digest_says_its_period_and_how_to_change_it() -> None:
    events = [
        *attempt(1, "exam_started", "exam_passed", student_id=1, first_id=100),
        *attempt(2, "exam_started", "exam_failed", student_id=2, first_id=200),
        *attempt(3, "exam_passed", student_id=3, first_id=300),
    ]
    since = WHEN - dt.timedelta(days=1)
    extras = MessageExtras(urgent=frozenset({300}), since=since, timezone="Europe/Berlin", footer=True)
    [part] = render_digest_parts(events, extras=extras, now=WHEN)
    lines = part.text.splitlines()
    weekday = since.astimezone(dt.timezone(dt.timedelta(hours=2))).strftime("%A")
    assert lines[0] == f"📬 **LMS activity digest**: 5 events from 3 students, since {weekday} 16:03"
    assert lines[1].startswith(f"{URGENT_MARK}: 1 · ")
    students = [line for line in lines if line.startswith("**")]
    assert [s.split()[0] for s in students] == ["**S3**", "**S2**", "**S1**"]  # urgent, then failed, then the rest
    assert f"- {URGENT_MARK} · ✅ passed the exam" in part.text
    assert lines[-1] == FOOTER
