"""Preferences: scope resolution and due times (time zones, DST, quiet hours, weekly, snooze), no clock inside."""

from __future__ import annotations

import datetime as dt

import pytest

from lms_activity_pipeline.domain.preferences import (
    Preference,
    PreferenceError,
    QuietHours,
    due_at,
    parse_quiet_hours,
    parse_snooze,
    period_start,
    resolve,
)

pytestmark = pytest.mark.unit

UTC = dt.UTC


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_most_specific_scope_wins_and_default_applies_without_any() -> None:
    default = Preference(mentor_id=0, frequency="immediate")
    prefs = [
        Preference(7, "all", 0, frequency="daily"),
        Preference(7, "course", 3, frequency="weekly"),
        Preference(7, "student", 11, frequency="off"),
    ]
    assert resolve(prefs, student_id=11, course_id=3, default=default).frequency == "off"
    assert resolve(prefs, student_id=12, course_id=3, default=default).frequency == "weekly"
    assert resolve(prefs, student_id=12, course_id=4, default=default).frequency == "daily"
    assert resolve([], student_id=12, course_id=4, default=default) is default
    assert resolve(prefs[1:], student_id=12, course_id=None, default=default) is default


def test_daily_due_when_send_hour_passed_and_no_digest_since() -> None:
    daily = Preference(1, frequency="daily", send_hour=18, timezone="Europe/Berlin")  # UTC+1 in December
    before = at(2026, 12, 3, 16, 30)  # 17:30 Berlin
    assert due_at(daily, before, None, "UTC") == before  # yesterday's slot, nothing sent since: due now
    assert due_at(daily, before, at(2026, 12, 2, 17, 5), "UTC") == at(2026, 12, 3, 17)  # held until 18:00 Berlin
    after = at(2026, 12, 3, 17, 1)  # 18:01 Berlin
    assert due_at(daily, after, at(2026, 12, 2, 17, 5), "UTC") <= after
    # a digest went out at 18:02: the next one is tomorrow
    assert due_at(daily, at(2026, 12, 3, 20), at(2026, 12, 3, 17, 2), "UTC") == at(2026, 12, 4, 17)


def test_setting_the_send_hour_to_the_current_hour_makes_it_due_now() -> None:
    now = at(2026, 12, 3, 14, 30)
    earlier_digest = at(2026, 12, 3, 9, 0)
    assert due_at(Preference(1, frequency="daily", send_hour=14), now, earlier_digest, "UTC") <= now
    assert due_at(Preference(1, frequency="daily", send_hour=15), now, earlier_digest, "UTC") == at(2026, 12, 3, 15)


def test_daily_send_hour_follows_a_dst_change() -> None:
    """Europe/Berlin leaves summer time on 2026-10-25: 18:00 local is 16:00 UTC before, 17:00 UTC after."""
    daily = Preference(1, frequency="daily", send_hour=18, timezone="Europe/Berlin")
    sent_saturday = at(2026, 10, 24, 16, 0)
    assert due_at(daily, at(2026, 10, 24, 20), sent_saturday, "UTC") == at(2026, 10, 25, 17)
    assert due_at(daily, at(2026, 10, 25, 16, 30), sent_saturday, "UTC") == at(2026, 10, 25, 17)
    # the spring change (2026-03-29): 18:00 local is 17:00 UTC before, 16:00 UTC after
    assert due_at(daily, at(2026, 3, 28, 20), at(2026, 3, 28, 17), "UTC") == at(2026, 3, 29, 16)
    # the default time zone (LMS_TIMEZONE) applies to a preference without one
    assert due_at(
        Preference(1, frequency="daily"), at(2026, 7, 1, 10), at(2026, 6, 30, 22, 5), "America/New_York"
    ) == at(2026, 7, 1, 22)


def test_weekly_on_the_chosen_weekday() -> None:
    weekly = Preference(1, frequency="weekly", weekday="wed", send_hour=9)
    # 2026-12-03 is a Thursday: the last Wednesday 09:00 is 2026-12-02
    assert due_at(weekly, at(2026, 12, 3, 12), at(2026, 12, 2, 9, 5), "UTC") == at(2026, 12, 9, 9)
    assert due_at(weekly, at(2026, 12, 3, 12), at(2026, 11, 30), "UTC") == at(2026, 12, 3, 12)  # missed: due now
    assert due_at(weekly, at(2026, 12, 9, 8, 59), at(2026, 12, 2, 9, 5), "UTC") == at(2026, 12, 9, 9)


def test_hourly_at_the_top_of_the_hour() -> None:
    hourly = Preference(1, frequency="hourly")
    assert due_at(hourly, at(2026, 12, 3, 10, 20), at(2026, 12, 3, 10, 5), "UTC") == at(2026, 12, 3, 11)
    assert due_at(hourly, at(2026, 12, 3, 10, 20), at(2026, 12, 3, 9, 5), "UTC") == at(2026, 12, 3, 10, 20)


def test_quiet_hours_across_midnight_hold_until_they_end() -> None:
    quiet = parse_quiet_hours("22:00-07:00")
    assert quiet == QuietHours(dt.time(22), dt.time(7))
    pref = Preference(1, quiet_hours=quiet, timezone="Europe/Berlin")
    assert due_at(pref, at(2026, 12, 3, 22, 30), None, "UTC") == at(2026, 12, 4, 6)  # 23:30 -> 07:00 next day
    assert due_at(pref, at(2026, 12, 4, 2, 0), None, "UTC") == at(2026, 12, 4, 6)  # 03:00 -> 07:00 same day
    assert due_at(pref, at(2026, 12, 4, 12, 0), None, "UTC") == at(2026, 12, 4, 12)  # outside: now
    # a daily digest whose send hour is inside the quiet hours waits for their end
    late = Preference(1, frequency="daily", send_hour=23, quiet_hours=quiet)
    assert due_at(late, at(2026, 12, 3, 23, 30), at(2026, 12, 2, 23, 1), "UTC") == at(2026, 12, 4, 7)


def test_urgent_bypasses_frequency_quiet_hours_and_snooze() -> None:
    pref = Preference(
        1, frequency="weekly", quiet_hours=parse_quiet_hours("00:00-23:59"), snooze_until=dt.date(2027, 1, 1)
    )
    now = at(2026, 12, 3, 12)
    assert due_at(pref, now, now, "UTC", urgent=True) == now
    assert due_at(Preference(1, frequency="off"), now, None, "UTC", urgent=True) == now


def test_off_is_never_due_and_snooze_holds_until_the_date() -> None:
    now = at(2026, 12, 3, 12)
    assert due_at(Preference(1, frequency="off"), now, None, "UTC") is None
    snoozed = Preference(1, snooze_until=parse_snooze("2026-12-10"), timezone="Asia/Tokyo")
    assert due_at(snoozed, now, None, "UTC") == at(2026, 12, 9, 15)  # midnight in Tokyo
    assert due_at(snoozed, at(2026, 12, 10, 0), None, "UTC") == at(2026, 12, 10, 0)


def test_period_covered_by_a_digest() -> None:
    daily = Preference(1, frequency="daily", send_hour=18)
    assert period_start(daily, at(2026, 12, 3, 18, 5), "UTC") == at(2026, 12, 2, 18)
    assert period_start(Preference(1), at(2026, 12, 3, 18, 5), "UTC") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"frequency": "sometimes"}, "--frequency 'sometimes' is not one of"),
        ({"send_hour": 24}, "--send-hour 24 must be 0 to 23"),
        ({"weekday": "monday"}, "--weekday 'monday'"),
        ({"timezone": "Mars/Olympus"}, "--timezone 'Mars/Olympus' is not an IANA time zone"),
    ],
)
def test_bad_values_are_one_line_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(PreferenceError, match=message) as info:
        Preference(1, **kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["22-07", "22:00", "25:00-07:00", "22:00-22:00", "ab:cd-07:00"])
def test_bad_quiet_hours(text: str) -> None:
    with pytest.raises(PreferenceError, match="--quiet-hours"):
        parse_quiet_hours(text)
