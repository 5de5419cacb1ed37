"""What a notify run costs to decide what is due, with mentors' preferences and rules, on PostgreSQL.

    python benchmarks/notify_decision.py [--server postgresql://...] [--mentors 10000] [--pairs 100000]

Builds a warehouse (database ``lms_bench_decision``, recreated) holding ``--pairs`` waiting pairs of
``--mentors`` mentors (each a few students in a few courses), a preference for every mentor (a mix of
daily, weekly, hourly, off, immediate with quiet hours and snoozes, plus course- and student-scoped
overrides for a third of them), their last digest times and four rules (scores and failures in a row
included). Then it times what a notify run does before its first message (read the pairs, the
preferences and the digest state, compute every due time, sort into due / skipped / held) and what the
sensors and the schedule ask before starting a run (the backlog: the same decision plus the counts).
Target: under 2 s to decide what is due.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from benchmarks.common import DEFAULT_SERVER, Report, database_url, ensure_database, peak_rss_mb
from lms_activity_pipeline import db
from lms_activity_pipeline.domain.rules import parse_rules
from lms_activity_pipeline.notify.policy import NotifyPolicy
from lms_activity_pipeline.notify.request import NotifyRequest
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.store import Warehouse

RULES = {
    "rules": [
        {
            "name": "second failure is urgent",
            "when": {"event_types": ["exam_failed"], "min_failures_in_row": 2},
            "urgent": True,
        },
        {"name": "no content starts", "when": {"event_types": ["content_started"]}, "notify": False},
        {"name": "very low scores are urgent", "when": {"max_score_pct": 20}, "urgent": True},
        {"name": "nothing from course 3", "when": {"courses": [3]}, "notify": False},
    ]
}
TYPES = np.array(["exam_started", "exam_completed", "exam_passed", "exam_failed", "content_started", "content_watched"])


def build(url: str, mentors: int, pairs: int, now: dt.datetime, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    warehouse = Warehouse(url)
    warehouse.migrate()
    mentor_of = rng.integers(0, mentors, pairs) + 100_000
    student = (mentor_of - 100_000) * 4 + rng.integers(0, 4, pairs) + 1
    events = pd.DataFrame(
        {
            "event_id": np.arange(1, pairs + 1),
            "event_key": [f"exam:{i}:x" for i in range(1, pairs + 1)],
            "event_type": TYPES[rng.integers(0, len(TYPES), pairs)],
            "student_id": student,
            "course_id": rng.integers(1, 20, pairs),
            "activity_id": rng.integers(1, 200, pairs),
            "timestamp": [now - dt.timedelta(minutes=int(m)) for m in rng.integers(1, 60 * 24 * 3, pairs)],
            "activity_metadata": [f'{{"percentage": {p}}}' for p in rng.integers(0, 101, pairs)],
        }
    )
    log = pd.DataFrame({"event_id": events["event_id"], "mentor_id": mentor_of})
    frequencies = np.array(["daily", "daily", "weekly", "hourly", "off", "immediate"])
    ids = np.arange(mentors) + 100_000
    prefs = pd.DataFrame(
        {
            "mentor_id": ids,
            "scope_kind": "all",
            "scope_id": 0,
            "frequency": frequencies[rng.integers(0, len(frequencies), mentors)],
            "send_hour": rng.integers(0, 24, mentors),
            "weekday": np.array(["mon", "tue", "wed", "thu", "fri", "sat", "sun"])[rng.integers(0, 7, mentors)],
            "timezone": np.array(["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"])[
                rng.integers(0, 4, mentors)
            ],
            "quiet_start": np.where(rng.random(mentors) < 0.3, "22:00", None),
            "quiet_end": "07:00",
            "snooze_until": [now.date() + dt.timedelta(days=2) if r < 0.05 else None for r in rng.random(mentors)],
        }
    )
    prefs.loc[prefs["quiet_start"].isna(), "quiet_end"] = None
    some = ids[: mentors // 3]
    course = prefs.iloc[: len(some)].assign(
        scope_kind="course", scope_id=rng.integers(1, 20, len(some)), frequency="immediate"
    )
    single = prefs.iloc[: len(some)].assign(scope_kind="student", scope_id=(some - 100_000) * 4 + 1, frequency="weekly")
    state = pd.DataFrame(
        {"mentor_id": ids, "last_digest_at": [now - dt.timedelta(hours=int(h)) for h in rng.integers(1, 200, mentors)]}
    )
    with db.write_transaction(warehouse.engine) as conn:
        for table in (
            wh.lms_event_log,
            wh.lms_activity_events,
            wh.mentor_notification_preferences,
            wh.mentor_digest_state,
        ):
            conn.execute(table.delete())
        db.bulk_insert(conn, wh.lms_activity_events, events)
        db.bulk_insert(conn, wh.lms_event_log, log)
        db.bulk_insert(conn, wh.mentor_notification_preferences, pd.concat([prefs, course, single]))
        db.bulk_insert(conn, wh.mentor_digest_state, state)
        conn.exec_driver_sql("ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--mentors", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    url = ensure_database(database_url(args.server, "lms_bench_decision"), recreate=True)
    now = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    build(url, args.mentors, args.pairs, now)
    report = Report(f"notify decision: {args.mentors:,} mentors with preferences, {args.pairs:,} waiting pairs")
    report.add("build the warehouse", f"{time.perf_counter() - started:.1f} s")
    outbox = Warehouse(url).outbox()
    for label, rules in (("preferences only", None), ("preferences + 4 rules", parse_rules(RULES))):
        policy = NotifyPolicy(default_frequency="immediate", timezone="UTC", rules=rules or parse_rules(None))
        request = NotifyRequest(policy=policy, max_age=dt.timedelta(hours=24))
        decide_s, backlog_s = [], []
        decision = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            decision = request.decide(outbox, now)
            decide_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            request.backlog(outbox, now)
            backlog_s.append(time.perf_counter() - t0)
        assert decision is not None
        due = sum(len(p) for p in decision.due.values())
        skipped = sum(len(i) for i in decision.skipped.values())
        report.add(
            f"decide what is due, {label}",
            f"{statistics.median(decide_s):.2f} s median ({min(decide_s):.2f}-{max(decide_s):.2f})",
            f"{due:,} due to {len(decision.due):,} mentors, {skipped:,} skipped, {decision.held:,} held; target < 2 s",
        )
        report.add(
            f"backlog (sensor/schedule check), {label}",
            f"{statistics.median(backlog_s):.2f} s median ({min(backlog_s):.2f}-{max(backlog_s):.2f})",
        )
    report.add("peak memory", f"{peak_rss_mb():.0f} MB")
    report.print()


if __name__ == "__main__":
    main()
