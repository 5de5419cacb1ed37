"""The README's main command on the embedded defaults, run as a new user would."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus

from lms_activity_pipeline_tests.support.processes import stop_process_group

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LMS_", "ZULIP_", "DAGSTER_"))}
    return {**env, **extra}


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lms_activity_pipeline.cli", *args],
        cwd=cwd,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_monitor_once_with_no_configuration_builds_the_demo_and_stores_events(tmp_path: Path) -> None:
    proc = cli(tmp_path, "monitor", "--once")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert "creating one at" in out and "first poll: recompute history" in out

    home = tmp_path / ".lms_activity"
    warehouse = sa.create_engine(f"sqlite:///{home / 'warehouse.sqlite3'}")
    with warehouse.connect() as conn:
        by_type = dict(conn.execute(sa.text("SELECT event_type, count(*) FROM lms_activity_events GROUP BY 1")).all())
    assert set(by_type) == {
        "exam_started",
        "exam_completed",
        "exam_passed",
        "exam_failed",
        "content_started",
        "content_watched",
        "content_completed",
    }
    total_line = next(line for line in out.splitlines() if line.startswith("total"))
    assert int(total_line.split()[1]) == sum(by_type.values())

    instance = DagsterInstance.from_config(str(home / "dagster_home"))
    runs = instance.get_runs()
    assert {r.job_name: r.status for r in runs} == {
        "lms_ingest_job": DagsterRunStatus.SUCCESS,
        "notify_mentors_job": DagsterRunStatus.SUCCESS,
    }
    with warehouse.connect() as conn:
        statuses = dict(conn.execute(sa.text("SELECT status, count(*) FROM lms_event_log GROUP BY 1")).all())
    assert statuses.get("dry_run", 0) > 0 and set(statuses) <= {"dry_run", "skipped"}  # no Zulip configured


def test_demo_command_is_deterministic(tmp_path: Path) -> None:
    args = ("demo", "--students", "12", "--days", "3", "--seed", "5", "--now", "2026-03-01T12:00:00+00:00")
    first = cli(tmp_path, *args)
    assert first.returncode == 0, first.stderr
    assert "students" in first.stdout and "attempts" in first.stdout
    db_file = tmp_path / ".lms_activity" / "demo_lms.sqlite3"
    engine = sa.create_engine(f"sqlite:///{db_file}")
    with engine.connect() as conn:
        students = conn.execute(sa.text("SELECT count(*) FROM \"Users\" WHERE role = 'student'")).scalar()
        exams_before = conn.execute(sa.text('SELECT * FROM "Attempts" ORDER BY id')).all()
    assert students == 12 and exams_before
    again = cli(tmp_path, *args)  # refresh: the same rows again
    assert again.returncode == 0, again.stderr
    with engine.connect() as conn:
        exams_after = conn.execute(sa.text('SELECT * FROM "Attempts" ORDER BY id')).all()
    assert exams_after == exams_before
    bad = cli(tmp_path, "demo", "--students", "0")
    assert bad.returncode == 2 and "--students must be >= 1" in bad.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dagster_dev_runs(project: Path, log: Path) -> list[tuple[str, str]]:
    """Start ``DAGSTER_HOME=$PWD dagster dev`` as the README says, read the run history through its GraphQL
    API once it answers, stop it; returns ``(job name, status)`` of every run it shows."""
    port = free_port()
    # The sensor stays off here, so the history the UI shows is exactly the CLI's (its own first tick is
    # tested in polling/test_sensor.py).
    env = clean_env(DAGSTER_HOME=str(project), LMS_ACTIVITY_MONITOR_ENABLED="false")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["dagster", "dev", "-p", str(port)],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    query = json.dumps({"query": "{ runsOrError { ... on Runs { results { jobName status } } } }"}).encode()
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql", data=query, headers={"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request, timeout=5) as reply:
                    runs = json.load(reply)["data"]["runsOrError"]["results"]
                return [(r["jobName"], r["status"]) for r in runs]
            except (OSError, KeyError, TypeError):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(1)
    finally:
        stop_process_group(proc)


def test_dagster_dev_works_before_and_after_the_first_poll_and_shows_its_runs(tmp_path: Path) -> None:
    """The repository root is the local Dagster home: `dagster dev` starts there with no warning before any
    poll, and after `lms-activity monitor --once` (run from the same directory) shows that poll's runs."""
    project = tmp_path / "checkout"
    project.mkdir()
    for name in ("dagster.yaml", "workspace.yaml"):
        shutil.copyfile(ROOT / name, project / name)

    before = dagster_dev_runs(project, tmp_path / "dev1.log")
    assert_no_warning_of_ours((tmp_path / "dev1.log").read_text())

    proc = cli(project, "monitor", "--once")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = dagster_dev_runs(project, tmp_path / "dev2.log")
    assert ("lms_ingest_job", "SUCCESS") in after and ("notify_mentors_job", "SUCCESS") in after
    assert len(after) >= len(before) + 2  # the CLI's runs, in the instance the UI reads
    assert_no_warning_of_ours((tmp_path / "dev2.log").read_text())


def assert_no_warning_of_ours(log: str) -> None:
    """No warning about the instance configuration (an ignored dagster.yaml), no failing sensor tick or load.

    Dagster 1.13 itself says `dagster dev` is superseded by `dg dev`, and a fresh instance's event-log
    daemon that it has no cursor yet: those are Dagster's, not this project's; so is a code server restart
    logged while the test's Ctrl-C shuts everything down."""
    running = log.split("KeyboardInterrupt received", 1)[0]  # what shutting down prints is Dagster's own race
    lines = [line for line in running.splitlines() if "WARNING" in line or "ERROR" in line or "Warning" in line]
    ours = [line for line in lines if "superseded" not in line and "No cursor for event type" not in line]
    assert not ours and "will not be used" not in log, log[-3000:]
