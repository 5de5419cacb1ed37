"""``lms-activity demo``: create or refresh the demo LMS at ``LMS_DATABASE_URL`` (default: a SQLite file)."""

from __future__ import annotations

import argparse

from lms_activity_pipeline.cli.args import positive, timestamp
from lms_activity_pipeline.errors import ConfigError
from lms_activity_pipeline.settings import DEMO_DAYS, Settings
from lms_activity_pipeline.urls import redact_url

SUMMARY_FIELDS = (
    "students",
    "mentors",
    "courses",
    "exams",
    "contents",
    "mentor_assignments",
    "attempts",
    "content_attempts",
)


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    demo = sub.add_parser("demo", parents=[common], help="create or refresh the demo LMS")
    demo.add_argument("--students", type=positive("--students"), default=50, help="number of students (default 50)")
    demo.add_argument(
        "--days", type=positive("--days"), default=DEMO_DAYS, help=f"days of history up to now (default {DEMO_DAYS})"
    )
    demo.add_argument("--seed", type=int, default=42, help="random seed; same seed, same LMS (default 42)")
    demo.add_argument(
        "--now",
        type=timestamp("--now"),
        help="anchor time, ISO-8601 (default: now); pins every timestamp for reproducible LMSs",
    )
    demo.add_argument(
        "--force",
        action="store_true",
        help="replace the demo's tables even in a database holding other tables (those are left as they are); "
        "without it, only an empty database or an earlier demo is written",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    from lms_activity_pipeline.lms.demo import NotADemoDatabase, generate_demo_lms

    url = settings.lms_database_url
    try:
        summary = generate_demo_lms(
            url,
            students=args.students,
            days=args.days,
            seed=args.seed,
            now=args.now,
            force=args.force,
            progress=lambda line: print(f"  {line}"),
        )
    except NotADemoDatabase as exc:
        raise ConfigError(
            f"LMS_DATABASE_URL={redact_url(url)} is not a demo LMS: {exc}; nothing was changed "
            "(point LMS_DATABASE_URL at an empty database, or pass --force to replace the demo tables there)"
        ) from None
    print(f"Demo LMS ready at {redact_url(url)} ({summary.seconds:.1f} s):")
    for name in SUMMARY_FIELDS:
        print(f"  {name:<20} {getattr(summary, name):>10,}")
    return 0
