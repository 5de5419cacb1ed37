"""``lms-activity risk``: the students at risk of the latest day computed (``--refresh``: compute today first)."""

from __future__ import annotations

import argparse
import datetime as dt
from zoneinfo import ZoneInfo

import pandas as pd

from lms_activity_pipeline import names
from lms_activity_pipeline.cli.args import positive
from lms_activity_pipeline.settings import Settings


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    risk = sub.add_parser("risk", parents=[common], help="students at risk, with their reasons")
    risk.add_argument("--course", type=positive("--course"), help="only this course (LMS Courses.id)")
    risk.add_argument(
        "--level", choices=("high", "medium"), default="medium", help="this level and worse (default medium)"
    )
    risk.add_argument("--refresh", action="store_true", help="compute today's student_risk first (a Dagster run)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from lms_activity_pipeline.defs.resources import resources_for
    from lms_activity_pipeline.domain.risk import levels_from

    resources = resources_for(settings, env_vars=False)
    store = resources["warehouse"].store()
    store.migrate()
    if args.refresh:
        from lms_activity_pipeline.cli.instance import get_instance, load_definitions
        from lms_activity_pipeline.defs.runs import run_student_risk

        today = dt.datetime.now(ZoneInfo(settings.timezone)).date().isoformat()
        print(f"Computing student_risk for {today} ...")
        level = "DEBUG" if args.verbose else "WARNING"
        result = run_student_risk(
            load_definitions(settings),
            get_instance(settings),
            today,
            tags={names.TRIGGER_TAG: "cli"},
            run_config={"loggers": {"console": {"config": {"log_level": level}}}},
            raise_on_error=False,
        )
        if not result.success:
            print(f"The student_risk run {result.run_id} failed: see its logs (dagster dev, or --verbose)")
            return 1
    rows = store.student_risk(levels=levels_from(args.level), course_id=args.course)
    print_flagged(rows, args.level)
    return 0


def print_flagged(rows: pd.DataFrame, level: str) -> None:
    """One block per flagged student and course: level, score, names, and each reason in words."""
    if rows.empty:
        print(f"No students at risk ({level} or worse) in the latest student_risk day.")
        return
    day = rows["as_of"].iloc[0]
    print(f"Students at risk on {day} ({level} or worse): {len(rows)}")
    for row in rows.to_dict("records"):
        name = row["student_username"] or f"student {row['student_id']}"
        course = row["course_title"] or f"course {row['course_id']}"
        level, score = str(row["risk_level"]).upper(), float(row["risk_score"])
        print(f"  {level:<6} {score:.2f}  {name} (id {row['student_id']}) in {course}")
        for reason in row["reasons"]:
            print(f"           - {reason['code']}: {reason['detail']}")
