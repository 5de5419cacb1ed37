"""End-to-end latency: an LMS insert -> a recorded Zulip DM, with a 5 s poll interval (``--interval``).

    python benchmarks/latency.py --generate --lms-db lms_latency --students 2000 --days 14
    python benchmarks/latency.py --lms-db lms_latency --via dagster

``--via cli`` (default) runs ``lms-activity monitor --daemon --interval 5``;
``--via webhook`` runs the same daemon plus ``lms-activity serve``, and sends the LMS's signed webhook
(``POST /webhooks/lms``) right after each insert: the daemon polls as soon as it is recorded;
``--via dagster`` runs the production processes instead: ``dagster-daemon run``
on deploy/dagster.yaml with PostgreSQL run storage, the sensor ticking every
5 s, its ingest run and the notify run each launched from the queue in a run
worker process; ``--via dagster-webhook`` adds ``lms-activity serve`` and the
webhook, which ``lms_webhook_sensor`` picks up at its next tick. Both against a PostgreSQL LMS and warehouse, with the real
zulip client sending to the loopback Zulip test server (every LMS mentor
registered there). After the first poll has stored the history and sent its
notifications, inserts one graded, failed attempt at a time and measures the
time until the mentor's DM is stored by the server (and, via Dagster, where
that time went).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from standardwebhooks.webhooks import Webhook

from benchmarks.common import DEFAULT_SERVER, Report, database_url, ensure_database
from lms_activity_pipeline import (
    db,
    names,
)
from lms_activity_pipeline.lms.demo import generate_demo_lms
from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip

INTERVAL = 5
ROOT = Path(__file__).resolve().parents[1]


def wait(condition, timeout: float, proc: subprocess.Popen) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(
                f"the daemon exited with code {proc.returncode} (its log: daemon.log in the temporary home)"
            )
        if condition():
            return time.perf_counter() - start
        time.sleep(0.02)
    raise SystemExit("timed out")


def record_stages(instance: DagsterInstance, inserted: float, dm_at: float, stages: dict[str, list[float]]) -> str:
    """Where one insert's time went, from the run records of the ingest and notify runs it caused (``dm_at``:
    when the DM reached the Zulip server)."""
    deadline = time.monotonic() + 60
    while True:  # the DM is out a moment before the runs record their ends
        [ingest] = instance.get_run_records(RunsFilter(job_name=names.INGEST_JOB), limit=1)
        [notify] = instance.get_run_records(RunsFilter(job_name=names.NOTIFY_JOB), limit=1)
        if (notify.end_time is not None and ingest.end_time is not None) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert ingest.start_time is not None and ingest.end_time is not None and notify.start_time is not None
    steps = [
        ("insert -> sensor requests the ingest run", ingest.create_timestamp.timestamp() - inserted),
        (
            "ingest run queued -> started (dequeue + run worker start-up)",
            ingest.start_time - ingest.create_timestamp.timestamp(),
        ),
    ]
    companion = notify.create_timestamp.timestamp() < ingest.start_time  # requested with the ingest run
    if companion:
        steps += [
            (
                "companion notify run queued -> started (beside the ingest run)",
                notify.start_time - notify.create_timestamp.timestamp(),
            ),
            ("ingest run started -> DM (the companion sends once the events step is done)", dm_at - ingest.start_time),
            ("ingest run started -> finished (feature steps included)", ingest.end_time - ingest.start_time),
        ]
    else:
        steps += [
            ("ingest run started -> finished", ingest.end_time - ingest.start_time),
            (
                "ingest finished -> notify run requested (run status sensor)",
                notify.create_timestamp.timestamp() - ingest.end_time,
            ),
            ("notify run queued -> started", notify.start_time - notify.create_timestamp.timestamp()),
            ("notify run started -> DM", dm_at - notify.start_time),
        ]
    for name, seconds in steps:
        stages.setdefault(name, []).append(seconds)
    return "companion" if companion else "run status sensor"


WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"latency-benchmark-webhook-secret").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def announce(url: str, row_id: int) -> None:
    """The LMS's signed webhook for a changed attempt (retried while the service starts)."""
    body = json.dumps({"type": "attempt.changed", "data": {"id": row_id}})
    wid, now = f"msg_{uuid.uuid4().hex}", dt.datetime.now(dt.UTC)
    headers = {
        "webhook-id": wid,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(WEBHOOK_SECRET).sign(wid, now, body),
        "content-type": "application/json",
    }
    for _ in range(50):
        try:
            httpx.post(url, content=body, headers=headers, timeout=5).raise_for_status()
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"the webhook to {url} was not accepted")


def main() -> None:
    global INTERVAL
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--generate", action="store_true", help="(re)generate lms_bench first")
    parser.add_argument("--students", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--lms-db", default="lms_bench", help="the LMS database on --server")
    parser.add_argument("--via", choices=["cli", "webhook", "dagster", "dagster-webhook"], default="cli")
    parser.add_argument("--interval", type=int, default=INTERVAL, help="poll interval, seconds (default 5)")
    args = parser.parse_args()
    INTERVAL = args.interval

    lms_url = ensure_database(database_url(args.server, args.lms_db))
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
    how = {
        "cli": f"monitor --daemon --interval {INTERVAL}",
        "webhook": f"LMS webhook -> lms-activity serve, monitor --daemon --interval {INTERVAL}",
        "dagster": f"dagster-daemon, sensor every {INTERVAL} s",
        "dagster-webhook": f"LMS webhook -> lms-activity serve, dagster-daemon (lms_webhook_sensor), poll every {INTERVAL} s",
    }[args.via]
    webhooks = args.via in ("webhook", "dagster-webhook")
    target = {
        "cli": f"{INTERVAL + 2} s",
        "webhook": "3 s (median)",
        "dagster": f"{INTERVAL + 10} s",
        "dagster-webhook": f"{INTERVAL + 10} s",
    }[args.via]
    report = Report(f"Insert-to-DM latency, {how}, PostgreSQL LMS with {attempts:,} attempts")

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
        # Only the measured inserts are notified: the history's backlog (events of the last 24 h) would
        # otherwise still be draining, 1,000 pairs per notify run, while they are measured.
        "LMS_NOTIFY_MAX_AGE_HOURS": "0.05",
    }
    if webhooks:  # the service checks signatures with it; the daemon starts lms_webhook_sensor when it is set
        env["LMS_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    (home / "dagster_home").mkdir(parents=True)
    instance = None
    if args.via in ("cli", "webhook"):
        (home / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        command, cwd = (
            [sys.executable, "-m", "lms_activity_pipeline.cli", "monitor", "--daemon", "--interval", str(INTERVAL)],
            None,
        )
    else:
        shutil.copyfile(ROOT / "deploy" / "dagster.yaml", home / "dagster_home" / "dagster.yaml")
        env["DAGSTER_POSTGRES_URL"] = ensure_database(
            database_url(args.server, "lms_bench_latency_dagster"), recreate=True
        )
        env["LMS_ACTIVITY_POLL_INTERVAL"] = str(INTERVAL)
        command, cwd = (
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
            ROOT,
        )
        os.environ["DAGSTER_POSTGRES_URL"] = env["DAGSTER_POSTGRES_URL"]
        instance = DagsterInstance.from_config(str(home / "dagster_home"))
    log = (home / "daemon.log").open("w")
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    warehouse = db.create_engine(wh_url)
    stages: dict[str, list[float]] = {}
    paths: dict[str, list[float]] = {}  # which notify run sent the DM: the companion or the run status sensor's
    service = hook = None
    if webhooks:
        port = free_port()
        service = subprocess.Popen(
            [sys.executable, "-m", "lms_activity_pipeline.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        hook = f"http://127.0.0.1:{port}/webhooks/lms"
    try:

        def history_done() -> bool:
            if instance is not None:  # the history's ingest run and the notify run after it (if one was due)
                if instance.get_runs(
                    RunsFilter(job_name=names.NOTIFY_JOB, statuses=[DagsterRunStatus.SUCCESS]), limit=1
                ):
                    return True
                ingested = instance.get_run_records(
                    RunsFilter(job_name=names.INGEST_JOB, statuses=[DagsterRunStatus.SUCCESS]), limit=1
                )
                # nothing was due (an LMS generated earlier: its history is older than LMS_NOTIFY_MAX_AGE_HOURS)
                return bool(ingested) and time.time() - (ingested[0].end_time or time.time()) > 4 * INTERVAL
            with warehouse.connect() as conn:
                try:
                    return bool(
                        conn.execute(sa.text("SELECT last_run_status FROM lms_activity.lms_monitor_state")).scalar()
                    )
                except sa.exc.ProgrammingError:
                    return False

        history = wait(history_done, 3600, proc)
        report.add(
            "first poll (history ingest run)",
            f"{history:.1f} s",
            "LMS_NOTIFY_MAX_AGE_HOURS=0.05: only the measured inserts are notified",
        )
        settled = len(zulip.messages) - 1
        while len(zulip.messages) != settled:  # the history's own notifications drain first
            settled = len(zulip.messages)
            time.sleep(2 * INTERVAL)
        latencies = []
        pacing = random.Random(1)
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
                    {
                        "id": first_new + i,
                        "s": student,
                        "e": exam,
                        "t0": now - dt.timedelta(minutes=30),
                        "t1": now - dt.timedelta(minutes=1),
                        "t2": now,
                    },
                )
            inserted = time.time()
            if hook is not None:
                announce(hook, first_new + i)
            latencies.append(wait(lambda before=before: len(zulip.messages_to(mentor_email)) > before, 180, proc))
            if instance is not None:
                path = record_stages(instance, inserted, time.time(), stages)
                paths.setdefault(path, []).append(latencies[-1])
            time.sleep(pacing.uniform(0, INTERVAL))  # the next insert lands at a random point of the poll cycle
        report.add(
            "insert -> DM, median",
            f"{statistics.median(latencies):.2f} s",
            f"max {max(latencies):.2f} s over {len(latencies)} inserts; target < {target}",
        )
        report.add("insert -> DM, all", ", ".join(f"{x:.2f}" for x in latencies), "seconds")
        for path, values in paths.items():
            report.add(
                f"  DM sent by the {path}'s notify run",
                f"{len(values)} of {len(latencies)}",
                f"median {statistics.median(values):.2f} s",
            )
        for stage, values in stages.items():
            report.add(f"  {stage}, median", f"{statistics.median(values):.2f} s", f"max {max(values):.2f} s")
    finally:
        if service is not None:
            service.terminate()
            service.wait(30)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
        if instance is not None:
            instance.dispose()
        with lms.begin() as conn:
            conn.execute(sa.text('DELETE FROM "Attempts" WHERE id >= :i'), {"i": first_new})
        zulip.stop()
    report.print()


if __name__ == "__main__":
    main()
