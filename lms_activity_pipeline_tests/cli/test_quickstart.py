"""The README's main command on the embedded defaults, run as a new user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus

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
