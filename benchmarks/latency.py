"""End-to-end latency: an LMS insert -> a recorded Zulip DM, with `monitor --daemon --interval 5`.

    PYTHONPATH=. python benchmarks/latency.py              # reuses the lms_bench LMS of backfill.py
    PYTHONPATH=. python benchmarks/latency.py --generate --students 2000 --days 14

Runs the real daemon in a subprocess against a PostgreSQL LMS and warehouse,
with the real zulip client sending to the loopback Zulip test server (every
LMS mentor registered there). After the first poll has stored the history and
sent its notifications, inserts one graded, failed attempt at a time and
measures the time until the mentor's DM is stored by the server.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from benchmarks.common import DEFAULT_SERVER, Report, database_url, ensure_database  # noqa: E402
from lms_activity_pipeline import db  # noqa: E402
from lms_activity_pipeline.lms.demo import generate_demo_lms  # noqa: E402
from lms_activity_pipeline_tests.fake_zulip import FakeZulip  # noqa: E402

INTERVAL = 5


def wait(condition, timeout: float, proc: subprocess.Popen) -> float:  # noqa: ANN001
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited: {proc.stdout.read()}")
        if condition():
            return time.perf_counter() - start
        time.sleep(0.02)
    raise SystemExit("timed out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--generate", action="store_true", help="(re)generate lms_bench first")
    parser.add_argument("--students", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    lms_url = ensure_database(database_url(args.server, "lms_bench"))
    if args.generate:
        generate_demo_lms(lms_url, students=args.students, days=args.days)
    wh_url = ensure_database(database_url(args.server, "lms_bench_latency_wh"), recreate=True)
    lms = db.create_engine(lms_url)
    with lms.connect() as conn:
        mentors = conn.execute(sa.text("SELECT id, email, full_name FROM \"Users\" WHERE role = 'mentor'")).all()
        pair = conn.execute(
            sa.text(
                """SELECT a.student_id, e.id, u.email FROM "MentorAssignments" a, "Exams" e, "Users" u
                   WHERE a.ended_at IS NULL AND u.id = a.mentor_id ORDER BY a.id, e.id LIMIT 1"""
            )
        ).one()
        first_new = conn.execute(sa.text('SELECT max(id) FROM "Attempts"')).scalar_one() + 1
        attempts = conn.execute(sa.text('SELECT count(*) FROM "Attempts"')).scalar_one()
    report = Report(f"Insert-to-DM latency, daemon --interval {INTERVAL}, PostgreSQL LMS with {attempts:,} attempts")

    zulip = FakeZulip().start()
    for _, email, name in mentors:
        zulip.add_user(email, name)
    home = Path(tempfile.mkdtemp(prefix="lms_latency_"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LMS_", "ZULIP_", "DAGSTER_"))},
        "LMS_DATABASE_URL": lms_url,
        "LMS_WAREHOUSE_URL": wh_url,
        "LMS_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster_home"),
        "ZULIP_SITE": zulip.url,
        "ZULIP_EMAIL": zulip.email,
        "ZULIP_API_KEY": zulip.api_key,
        "PYTHONUNBUFFERED": "1",
    }
    (home / "dagster_home").mkdir(parents=True)
    (home / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lms_activity_pipeline.cli", "monitor", "--daemon", "--interval", str(INTERVAL)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    warehouse = db.create_engine(wh_url)
    try:
        def history_done() -> bool:
            with warehouse.connect() as conn:
                try:
                    return bool(conn.execute(sa.text("SELECT last_run_status FROM lms_activity.lms_monitor_state")).scalar())
                except sa.exc.ProgrammingError:
                    return False

        history = wait(history_done, 3600, proc)
        report.add("first poll (history ingest run)", f"{history:.1f} s", "events older than 24 h are not notified")
        settled = len(zulip.messages) - 1
        while len(zulip.messages) != settled:  # the history's own notifications drain first
            settled = len(zulip.messages)
            time.sleep(2 * INTERVAL)
        latencies = []
        student, exam, mentor_email = pair
        for i in range(args.rounds):
            before = len(zulip.messages_to(mentor_email))
            now = dt.datetime.now(dt.UTC)
            with lms.begin() as conn:
                conn.execute(
                    sa.text(
                        """INSERT INTO "Attempts" (id, user_id, exam_id, status, started_at, submitted_at, graded_at, score, updated_at)
                           VALUES (:id, :s, :e, 'graded', :t0, :t1, :t2, 0, :t2)"""
                    ),
                    {"id": first_new + i, "s": student, "e": exam, "t0": now - dt.timedelta(minutes=30),
                     "t1": now - dt.timedelta(minutes=1), "t2": now},
                )
            latencies.append(wait(lambda: len(zulip.messages_to(mentor_email)) > before, 120, proc))
            time.sleep(INTERVAL * 0.37)  # land the next insert at a different point of the poll cycle
        report.add("insert -> DM, median", f"{statistics.median(latencies):.2f} s", f"max {max(latencies):.2f} s over {len(latencies)} inserts; target < {INTERVAL + 2} s")
        report.add("insert -> DM, all", ", ".join(f"{x:.2f}" for x in latencies), "seconds")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        with lms.begin() as conn:
            conn.execute(sa.text('DELETE FROM "Attempts" WHERE id >= :i'), {"i": first_new})
        zulip.stop()
    report.print()


if __name__ == "__main__":
    main()
