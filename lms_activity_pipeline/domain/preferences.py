"""Mentor notification preferences: what they say, which one applies, and when held pairs become due.

Pure Python: every function takes ``now``; time zones come from :mod:`zoneinfo` (DST included).

- **Scope**: a preference is for all of a mentor's students, one course or one student; the most
  specific one wins (student > course > all), otherwise the default frequency
  (``LMS_NOTIFY_DEFAULT_FREQUENCY``).
- **Frequency**: ``immediate`` (due at once), ``hourly`` (due at the top of the hour), ``daily`` (due at
  the send hour), ``weekly`` (due on the weekday at the send hour), ``off`` (never: skipped).
  A scheduled digest is due when the mentor's local time has passed the latest slot (today's send
  hour for ``daily``) and no digest went out since then; otherwise at the next slot.
- **Quiet hours** (``22:00-07:00``, may cross midnight): a due time inside them moves to their end.
- **Snooze** until a date: nothing is due before that date's local midnight.
- Urgent pairs (a rule's ``urgent: true``) bypass all of it: due at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class Frequency(StrEnum):
    IMMEDIATE = "immediate"
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    OFF = "off"


FREQUENCIES: tuple[str, ...] = tuple(f.value for f in Frequency)
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_SEND_HOUR = 18
DEFAULT_WEEKDAY = "mon"
#: The scope kinds of a preference row, most specific first.
SCOPES: tuple[str, ...] = ("student", "course", "all")
MUTED_REASON = "muted by preference"


class PreferenceError(ValueError):
    """A preference value that cannot be used (one line naming the option)."""


@dataclass(frozen=True)
class QuietHours:
    """Local wall-clock hours when nothing but urgent messages is sent; ``start > end`` crosses midnight."""

    start: dt.time
    end: dt.time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, local: dt.time) -> bool:
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end


@dataclass(frozen=True)
class Preference:
    """One mentor's preference for a scope (``scope_kind`` ``all``/``course``/``student``, ``scope_id`` 0 for all)."""

    mentor_id: int
    scope_kind: str = "all"
    scope_id: int = 0
    frequency: str = Frequency.IMMEDIATE
    send_hour: int = DEFAULT_SEND_HOUR
    weekday: str = DEFAULT_WEEKDAY
    timezone: str | None = None
    quiet_hours: QuietHours | None = None
    snooze_until: dt.date | None = None

    def __post_init__(self) -> None:
        if self.scope_kind not in SCOPES:
            raise PreferenceError(f"scope {self.scope_kind!r} is not one of {', '.join(SCOPES)}")
        if self.frequency not in FREQUENCIES:
            raise PreferenceError(f"--frequency {self.frequency!r} is not one of {', '.join(FREQUENCIES)}")
        if not 0 <= self.send_hour <= 23:
            raise PreferenceError(f"--send-hour {self.send_hour} must be 0 to 23")
        if self.weekday not in WEEKDAYS:
            raise PreferenceError(f"--weekday {self.weekday!r} is not one of {', '.join(WEEKDAYS)}")
        if self.timezone is not None:
            parse_timezone(self.timezone)

    @property
    def holds(self) -> bool:
        """Whether this preference can hold a pair back (anything but plain ``immediate``)."""
        return self.frequency != Frequency.IMMEDIATE or self.quiet_hours is not None or self.snooze_until is not None

    @property
    def scheduled(self) -> bool:
        """Whether pairs under it go out as scheduled digests (hourly, daily, weekly)."""
        return self.frequency in (Frequency.HOURLY, Frequency.DAILY, Frequency.WEEKLY)

    def describe(self) -> str:
        scope = "all students" if self.scope_kind == "all" else f"{self.scope_kind} {self.scope_id}"
        parts = [f"{scope}: {self.frequency}"]
        if self.frequency in (Frequency.DAILY, Frequency.WEEKLY):
            on = f"{self.weekday} " if self.frequency == Frequency.WEEKLY else ""
            parts.append(f"at {on}{self.send_hour:02d}:00")
        if self.timezone:
            parts.append(f"time zone {self.timezone}")
        if self.quiet_hours:
            parts.append(f"quiet {self.quiet_hours}")
        if self.snooze_until:
            parts.append(f"snoozed until {self.snooze_until.isoformat()}")
        return ", ".join(parts)


# --- parsing the CLI's values -------------------------------------------------------------------------


def parse_timezone(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise PreferenceError(f"--timezone {text!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
    return text


def parse_quiet_hours(text: str) -> QuietHours:
    """``HH:MM-HH:MM`` (``22:00-07:00`` crosses midnight)."""
    start, sep, end = text.strip().partition("-")
    try:
        if not sep:
            raise ValueError
        quiet = QuietHours(_clock(start), _clock(end))
    except ValueError:
        raise PreferenceError(f"--quiet-hours {text!r} is not HH:MM-HH:MM (e.g. 22:00-07:00)") from None
    if quiet.start == quiet.end:
        raise PreferenceError(f"--quiet-hours {text!r} starts and ends at the same time")
    return quiet


def _clock(text: str) -> dt.time:
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not (hours.isdigit() and minutes.isdigit()) or len(minutes) != 2:
        raise ValueError(text)
    return dt.time(int(hours), int(minutes))


def parse_snooze(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise PreferenceError(f"--snooze-until {text!r} is not a date in YYYY-MM-DD form") from None


# --- scope resolution --------------------------------------------------------------------------------


def resolve(
    preferences: Iterable[Preference], student_id: int, course_id: int | None, default: Preference
) -> Preference:
    """The most specific of one mentor's ``preferences`` for a student in a course; ``default`` when none."""
    by_scope: dict[tuple[str, int], Preference] = {(p.scope_kind, p.scope_id): p for p in preferences}
    for key in (("student", student_id), ("course", course_id), ("all", 0)):
        if key[1] is not None and (found := by_scope.get((key[0], int(key[1])))) is not None:
            return found
    return default


# --- due times ---------------------------------------------------------------------------------------


def zone_of(preference: Preference, default_timezone: str) -> ZoneInfo:
    return ZoneInfo(preference.timezone or default_timezone)


def _local_at(day: dt.date, hour: int, zone: ZoneInfo) -> dt.datetime:
    """``hour``:00 local on ``day`` as UTC (a wall time skipped by DST resolves forward, fold=0)."""
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=zone).astimezone(dt.UTC)


def last_slot(preference: Preference, now: dt.datetime, default_timezone: str) -> dt.datetime:
    """The latest scheduled digest time at or before ``now`` (UTC)."""
    zone = zone_of(preference, default_timezone)
    local = now.astimezone(zone)
    if preference.frequency == Frequency.HOURLY:
        return local.replace(minute=0, second=0, microsecond=0).astimezone(dt.UTC)
    day = local.date()
    if preference.frequency == Frequency.WEEKLY:
        day -= dt.timedelta(days=(day.weekday() - WEEKDAYS.index(preference.weekday)) % 7)
    slot = _local_at(day, preference.send_hour, zone)
    if slot > now:
        slot = _local_at(
            day - dt.timedelta(days=7 if preference.frequency == Frequency.WEEKLY else 1), preference.send_hour, zone
        )
    return slot


def next_slot(preference: Preference, now: dt.datetime, default_timezone: str) -> dt.datetime:
    """The first scheduled digest time after ``now`` (UTC)."""
    if preference.frequency == Frequency.HOURLY:
        return last_slot(preference, now, default_timezone) + dt.timedelta(hours=1)
    zone = zone_of(preference, default_timezone)
    last = last_slot(preference, now, default_timezone).astimezone(zone).date()
    step = dt.timedelta(days=7 if preference.frequency == Frequency.WEEKLY else 1)
    return _local_at(last + step, preference.send_hour, zone)


@dataclass(frozen=True)
class Schedule:
    """When pairs under one preference become due at ``now``, whatever the mentor's last digest:
    ``fresh`` if no digest went out since ``last_slot`` (or there is no slot), else ``sent``;
    ``None`` never (``off``). Computed once per distinct preference, applied per mentor."""

    last_slot: dt.datetime | None
    fresh: dt.datetime | None
    sent: dt.datetime | None

    def due(self, last_digest_at: dt.datetime | None) -> dt.datetime | None:
        if self.last_slot is None or last_digest_at is None or last_digest_at < self.last_slot:
            return self.fresh
        return self.sent


def schedule(preference: Preference, now: dt.datetime, default_timezone: str) -> Schedule:
    """The :class:`Schedule` of ``preference`` at ``now`` (not urgent)."""
    if preference.frequency == Frequency.OFF:
        return Schedule(None, None, None)
    zone = zone_of(preference, default_timezone)
    slot: dt.datetime | None = None
    fresh = sent = now
    if preference.scheduled:
        slot = last_slot(preference, now, default_timezone)
        sent = max(now, next_slot(preference, now, default_timezone))
    if preference.snooze_until is not None:
        wake = dt.datetime.combine(preference.snooze_until, dt.time(0), tzinfo=zone).astimezone(dt.UTC)
        fresh, sent = max(fresh, wake), max(sent, wake)
    if preference.quiet_hours is not None:
        fresh = after_quiet_hours(preference.quiet_hours, fresh, zone)
        sent = after_quiet_hours(preference.quiet_hours, sent, zone)
    return Schedule(slot, fresh, sent)


def due_at(
    preference: Preference,
    now: dt.datetime,
    last_digest_at: dt.datetime | None,
    default_timezone: str,
    *,
    urgent: bool = False,
) -> dt.datetime | None:
    """When a waiting pair under ``preference`` may go out (``<= now``: due now); ``None`` for ``off``.

    Urgent pairs are due at once. Otherwise the frequency gives a time (``immediate``: now; a scheduled
    digest: now if no digest went out since the latest slot, else the next slot), a snooze pushes it to
    the snooze date's local midnight, and quiet hours push it to their end.
    """
    if urgent:
        return now
    return schedule(preference, now, default_timezone).due(last_digest_at)


def after_quiet_hours(quiet: QuietHours, when: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """``when``, or the end of the quiet hours it falls in (UTC)."""
    local = when.astimezone(zone)
    if not quiet.contains(local.time().replace(second=0, microsecond=0)):
        return when
    end_day = local.date()
    if local.time() >= quiet.end:  # in the evening part of hours that cross midnight: they end tomorrow
        end_day += dt.timedelta(days=1)
    end = dt.datetime.combine(end_day, quiet.end, tzinfo=zone)
    return end.astimezone(dt.UTC)


def period_start(preference: Preference, now: dt.datetime, default_timezone: str) -> dt.datetime | None:
    """The slot before the one due now: what a scheduled digest sent now covers starts there."""
    if not preference.scheduled:
        return None
    slot = last_slot(preference, now, default_timezone)
    return last_slot(preference, slot - dt.timedelta(seconds=1), default_timezone)
