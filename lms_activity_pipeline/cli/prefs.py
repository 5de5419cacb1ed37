"""``lms-activity prefs set|clear|show``: mentors' notification preferences (``mentor_notification_preferences``).

``MENTOR`` is the LMS user id, username or e-mail, looked up in the LMS (read-only). A bad value is
one line naming the option.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from lms_activity_pipeline.errors import ConfigError
from lms_activity_pipeline.settings import Settings

#: The options of ``prefs set`` (argparse dests), passed as given to ``warehouse.preferences.set_preference``.
OPTIONS = ("frequency", "send_hour", "weekday", "timezone", "quiet_hours", "snooze_until")


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from lms_activity_pipeline.domain.preferences import FREQUENCIES, WEEKDAYS

    prefs = sub.add_parser("prefs", parents=[common], help="mentors' notification preferences")
    actions = prefs.add_subparsers(dest="prefs_action", required=True)
    set_ = actions.add_parser(
        "set", parents=[common], help="set a mentor's preference (for all, a course or a student)"
    )
    clear = actions.add_parser("clear", parents=[common], help="remove a mentor's preference for a scope")
    show = actions.add_parser("show", parents=[common], help="list preferences (of one mentor, or all)")
    for action in (set_, clear):
        action.add_argument("mentor", metavar="MENTOR", help="LMS user id, username or e-mail of the mentor")
        scope = action.add_mutually_exclusive_group()
        scope.add_argument("--course", type=_int("--course"), help="only for this course id")
        scope.add_argument("--student", type=_int("--student"), help="only for this student's user id")
    show.add_argument("mentor", metavar="MENTOR", nargs="?", help="LMS user id, username or e-mail of the mentor")
    set_.add_argument("--frequency", choices=FREQUENCIES, help="how often to tell the mentor")
    set_.add_argument("--send-hour", type=_int("--send-hour"), help="local hour of daily/weekly digests (default 18)")
    set_.add_argument("--weekday", choices=WEEKDAYS, help="day of weekly digests (default mon)")
    set_.add_argument("--timezone", help="IANA time zone of the mentor (default LMS_TIMEZONE)")
    set_.add_argument("--quiet-hours", help="HH:MM-HH:MM, only urgent messages then (none: no quiet hours)")
    set_.add_argument("--snooze-until", help="YYYY-MM-DD, only urgent messages before that date (none: not snoozed)")


def _int(name: str) -> Any:
    def parse(value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {value!r}") from None

    return parse


def run(settings: Settings, args: argparse.Namespace) -> int:
    from lms_activity_pipeline.domain.preferences import PreferenceError
    from lms_activity_pipeline.lms.reader import LMSReader
    from lms_activity_pipeline.warehouse.preferences import PreferenceStore, set_preference
    from lms_activity_pipeline.warehouse.store import Warehouse

    warehouse = Warehouse(settings.warehouse_url, settings.warehouse_schema)
    warehouse.migrate()
    store = PreferenceStore(warehouse.engine)
    reader = LMSReader(settings.lms_database_url)
    try:
        if args.prefs_action == "show":
            return _show(store, reader, settings, args.mentor)
        mentor_id, label = _mentor(reader, args.mentor)
        kind, scope_id = _scope(args)
        if args.prefs_action == "clear":
            removed = store.clear(mentor_id, kind, scope_id)
            print(f"{label}: {'cleared' if removed else 'no'} preference for {_scope_text(kind, scope_id)}")
            return 0
        options = {name: getattr(args, name) for name in OPTIONS}
        default = settings.notify_default_frequency
        preference = set_preference(store, default, mentor_id, kind, scope_id, options, dt.datetime.now(dt.UTC))
        print(f"{label}: {preference.describe()}")
        return 0
    except PreferenceError as exc:
        raise ConfigError(str(exc)) from None


def _mentor(reader: Any, key: str) -> tuple[int, str]:
    from lms_activity_pipeline.warehouse.preferences import find_mentor

    return find_mentor(reader, key)


def _scope(args: argparse.Namespace) -> tuple[str, int]:
    if args.student is not None:
        return "student", int(args.student)
    if args.course is not None:
        return "course", int(args.course)
    return "all", 0


def _scope_text(kind: str, scope_id: int) -> str:
    return "all students" if kind == "all" else f"{kind} {scope_id}"


def _show(store: Any, reader: Any, settings: Settings, key: str | None) -> int:
    mentor_ids = None
    if key is not None:
        mentor_id, _ = _mentor(reader, key)
        mentor_ids = [mentor_id]
    found = store.all(mentor_ids)
    default = f"default for mentors without one: {settings.notify_default_frequency} (LMS_NOTIFY_DEFAULT_FREQUENCY)"
    if not found:
        print(f"no preferences stored; {default}")
        return 0
    for preference in found:
        print(f"mentor {preference.mentor_id}: {preference.describe()}")
    print(default)
    return 0
