"""The `lms-activity` and `dagster` command lines, run as a user would."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus

from lms_activity_pipeline import cli, names
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder, t
from lms_activity_pipeline_tests.support.pipeline import Pipeline
from lms_activity_pipeline_tests.support.processes import materialize, start_monitor_daemon

ROOT = Path(__file__).resolve().parents[2]


def recent(hours_ago: float) -> dt.datetime:
    """A time shortly before now, so the default partitions and notification age apply."""
    return (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours_ago)).replace(microsecond=0)


def env_for(backend: Backend, tmp_path: Path, **extra: str) -> dict[str, str]:
    start = (dt.date.today() - dt.timedelta(days=3)).isoformat()
    return {
        "LMS_DATABASE_URL": backend.lms_url,
        "LMS_WAREHOUSE_URL": backend.warehouse_url,
        "LMS_HOME": str(tmp_path / "lms_home"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "LMS_PARTITIONS_START": start,
        **extra,
    }


def live_school(backend: Backend) -> LMSBuilder:
    b = LMSBuilder(backend.lms_url).school()
    b.assign(9, 1, 10, recent(200))
    b.attempt(1, 1, 200, "graded", recent(30), submitted_at=recent(29.5), graded_at=recent(29), score=20)
    b.attempt(2, 2, 201, "submitted", recent(5), submitted_at=recent(4))
    b.content_attempt(
        1, 3, 300, "completed", recent(3), completed_at=recent(2.5), progress_percent=100, time_spent_seconds=640
    )
    return b.write()


def run_cli(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> int:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cli.main(list(args))


def snapshot(backend: Backend) -> pd.DataFrame:
    pipe = Pipeline(backend)
    return pipe.events()


def test_monitor_once_twice_second_poll_changes_nothing(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    live_school(backend)
    env = env_for(backend, tmp_path)
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    first = capsys.readouterr().out
    assert "first poll: recompute history" in first and "stored" in first
    before = snapshot(backend)
    assert len(before) == 8

    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    second = capsys.readouterr().out
    assert "No LMS changes" in second
    pd.testing.assert_frame_equal(snapshot(backend), before)  # not even updated_at moved

    runs = DagsterInstance.get().get_runs()
    assert all(r.status == DagsterRunStatus.SUCCESS for r in runs)
    ingests = [r for r in runs if r.job_name == "lms_ingest_job"]
    assert len(ingests) == 1 and ingests[0].tags["lms/trigger"] == "cli"
    assert [r.job_name for r in runs].count("notify_mentors_job") == 1  # dry-run pairs are final: nothing due again


def test_first_start_on_an_lms_with_history_is_one_run_and_notifies_only_recent_events(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lms = live_school(backend)
    for day in range(1, 4):  # three more days of history, days before the default notification age
        lms.attempt(
            100 + day,
            2,
            201,
            "graded",
            recent(24 * day + 30),
            submitted_at=recent(24 * day + 29),
            graded_at=recent(24 * day + 28),
            score=70,
        )
    lms.write()
    env = env_for(backend, tmp_path, LMS_PARTITIONS_START=(dt.date.today() - dt.timedelta(days=8)).isoformat())
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    assert "first poll: recompute history" in capsys.readouterr().out
    [ingest] = [r for r in DagsterInstance.get().get_runs() if r.job_name == "lms_ingest_job"]  # one run, all days
    assert ingest.tags["dagster/asset_partition_range_end"] == dt.datetime.now(dt.UTC).date().isoformat()
    assert ingest.tags["dagster/asset_partition_range_start"] <= recent(24 * 3 + 30).date().isoformat()

    pipe = Pipeline(backend)
    events = pipe.events()
    assert len(events) == 8 + 3 * 3  # started, completed, passed per old attempt
    log = pipe.log_rows()
    young = pd.to_datetime(events["timestamp"], utc=True) >= pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=24)
    assert set(log["event_key"]) == set(events.loc[young, "event_key"])  # the history is stored, never notified
    assert not any(k.startswith(("exam:101", "exam:102", "exam:103")) for k in log["event_key"])


def test_monitor_stats_match_the_warehouse(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lms = live_school(backend)
    env = env_for(backend, tmp_path)
    run_cli(monkeypatch, env, "monitor", "--once")
    capsys.readouterr()
    assert run_cli(monkeypatch, env, "monitor", "--stats") == 0
    out = capsys.readouterr().out
    printed = {m[0]: (int(m[1]), int(m[2])) for m in re.findall(r"^(\w+)\s+(\d+)\s+(\d+)\s*$", out, re.M)}
    events = snapshot(backend)
    now = pd.Timestamp.now(tz="UTC")
    for event_type, group in events.groupby("event_type"):
        ts = pd.to_datetime(group["timestamp"], utc=True)
        assert printed[event_type] == (len(group), int((ts >= now - pd.Timedelta(hours=24)).sum()))
    assert printed["total"][0] == len(events)
    assert printed["exam_passed"] == (0, 0)
    assert f"newest event:       {pd.to_datetime(events['timestamp'], utc=True).max().to_pydatetime()}" in out
    assert "lag behind LMS:     0 s" in out
    log = Pipeline(backend).log_rows()["status"].value_counts()
    assert (
        "notifications:      "
        + ", ".join(f"{s} {int(log.get(s, 0))}" for s in ("pending", "sent", "failed", "skipped", "dry_run"))
        in out
    )
    assert re.search(
        r"last poll:\s+\S+ .*\(first poll: recompute history", out
    )  # the poll's state, shared with the sensor
    assert re.search(r"last ingest run: .* by cli \(run .*, SUCCESS\)", out)

    # Someone else ingests (the sensor, a backfill): the lag comes from the data, not from this CLI's cursor.
    # It is the age of the oldest LMS change not in lms_activity_events: 15 minutes (and the test's seconds).
    lms.content_attempt(9, 1, 300, "in_progress", recent(0.5), updated_at=recent(0.25), progress_percent=10).write()
    assert run_cli(monkeypatch, env, "monitor", "--stats") == 0
    lag = int(
        re.search(r"lag behind LMS:\s+(\d+) s \(oldest LMS change not in lms_activity_events", capsys.readouterr().out)[
            1
        ]
    )
    assert 900 <= lag < 900 + 300
    pipe = Pipeline(backend, instance=DagsterInstance.get(), LMS_PARTITIONS_START=env["LMS_PARTITIONS_START"])
    pipe.ingest(
        recent(0.5).date().isoformat(), dt.datetime.now(dt.UTC).date().isoformat(), tags={"lms/trigger": "sensor"}
    )
    assert run_cli(monkeypatch, env, "monitor", "--stats") == 0
    out = capsys.readouterr().out
    assert "lag behind LMS:     0 s" in out and re.search(r"last ingest run: .* by sensor \(run .*, SUCCESS\)", out)


def test_daemon_picks_up_new_rows_and_stops_cleanly_on_sigterm(backend: Backend, tmp_path: Path) -> None:
    lms = live_school(backend)
    env = {**os.environ, **env_for(backend, tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = start_monitor_daemon(env, tmp_path, interval=1)
    try:
        wait_for(lambda: "exam:1:exam_failed" in event_keys(backend), proc)
        lms.attempt(
            3, 3, 200, "graded", recent(0.2), submitted_at=recent(0.1), graded_at=recent(0.05), score=49
        ).write()
        wait_for(lambda: "exam:3:exam_passed" in event_keys(backend), proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "Stopped." in out and "Traceback" not in out


def event_keys(backend: Backend) -> set[str]:
    engine = Pipeline(backend).warehouse.engine
    if not sa.inspect(engine).has_table("lms_activity_events", schema=Pipeline(backend).warehouse.schema):
        return set()
    with engine.connect() as conn:
        return set(conn.execute(sa.select(wh.lms_activity_events.c.event_key)).scalars())


def wait_for(condition, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited early: {proc.stdout.read()}")
        if condition():
            return
        time.sleep(0.3)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"LMS_ACTIVITY_POLL_INTERVAL": "soon"}, "LMS_ACTIVITY_POLL_INTERVAL='soon' is not a whole number of seconds"),
        (
            {"LMS_EVENT_TYPES_TO_MONITOR": "exam_passed,exam_exploded"},
            "LMS_EVENT_TYPES_TO_MONITOR: unknown event type(s) exam_exploded",
        ),
        ({"LMS_TIMEZONE": "Mars/Olympus"}, "LMS_TIMEZONE='Mars/Olympus' is not an IANA time zone"),
        ({"LMS_ACTIVITY_LOOKBACK_SECONDS": "-5"}, "LMS_ACTIVITY_LOOKBACK_SECONDS='-5' must be 0 or more"),
        (
            {"LMS_DATABASE_URL": "postgresql://postgres@127.0.0.1:9/nowhere"},
            '@127.0.0.1:9/nowhere: connection to server at "127.0.0.1", port 9 failed',
        ),
        (
            {"LMS_DATABASE_URL": "sqlite:////nonexistent/lms.sqlite3"},
            "LMS_DATABASE_URL: SQLite database /nonexistent/lms.sqlite3 does not exist",
        ),
        ({"LMS_WAREHOUSE_URL": "mysql://x@y/z"}, "LMS_WAREHOUSE_URL: backend 'mysql' is not supported"),
        (
            {"LMS_DATABASE_URL": "postgresql://u@host:5432:99/db"},
            "LMS_DATABASE_URL has a malformed port: it must be a number",
        ),
        (
            {"LMS_WAREHOUSE_URL": "postgresql://u@host:abc/db"},
            "LMS_WAREHOUSE_URL has a malformed port: it must be a number",
        ),
        ({"LMS_DATABASE_URL": "postgresql://u@host:99999/db"}, "LMS_DATABASE_URL: port 99999 is out of range 1-65535"),
    ],
    ids=[
        "interval",
        "event-type",
        "timezone",
        "lookback",
        "unreachable",
        "missing-sqlite",
        "backend",
        "two-ports",
        "port-not-a-number",
        "port-out-of-range",
    ],
)
def test_bad_configuration_is_one_clear_line(tmp_path: Path, env: dict[str, str], message: str) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LMS_", "DAGSTER_HOME"))}
    proc = subprocess.run(
        [sys.executable, "-m", "lms_activity_pipeline.cli", "monitor", "--once"],
        cwd=tmp_path,
        env={**base, "LMS_HOME": str(tmp_path), "LMS_DATABASE_URL": f"sqlite:///{tmp_path}/x.db", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert lines[0].startswith(f"lms-activity: configuration error: {next(iter(env))}")


MALFORMED_PORT = "postgresql://lms:PortSecret42@db.internal:5432:99/lms"


@pytest.mark.parametrize(
    "command",
    [
        ["lms-activity", "demo"],
        ["lms-activity", "monitor", "--stats"],
        ["dagster", "definitions", "validate", "-m", "lms_activity_pipeline.definitions"],
    ],
    ids=["demo", "monitor", "code-location"],
)
def test_malformed_database_url_is_a_configuration_error_naming_the_variable(
    tmp_path: Path, command: list[str]
) -> None:
    """Every entry point that reads LMS_DATABASE_URL, the Dagster code location included: no ValueError, no secret."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LMS_", "DAGSTER_HOME"))}
    program = (
        [sys.executable, "-m", "lms_activity_pipeline.cli"]
        if command[0] == "lms-activity"
        else [sys.executable, "-m", "dagster"]
    )
    proc = subprocess.run(
        [*program, *command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**base, "LMS_HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path), "LMS_DATABASE_URL": MALFORMED_PORT},
    )
    output = proc.stdout + proc.stderr
    assert "PortSecret42" not in output and "invalid literal" not in output and "ValueError" not in output, output
    if command[0] == "lms-activity":
        assert proc.returncode == 2 and proc.stdout == ""
        assert (
            proc.stderr == "lms-activity: configuration error: LMS_DATABASE_URL has a malformed port: "
            "it must be a number from 1 to 65535 (e.g. postgresql://user@db.internal:5432/lms)\n"
        )
    else:  # Dagster reports a code location that fails to load with the exception's one-line message
        assert proc.returncode != 0
        assert "lms_activity_pipeline.errors.ConfigError: LMS_DATABASE_URL has a malformed port" in output, output


def test_demo_refuses_a_database_that_is_not_a_demo(backend: Backend, tmp_path: Path) -> None:
    """With a real LMS in LMS_DATABASE_URL, ``demo`` is one line on stderr and exit 2, and the LMS is intact."""
    LMSBuilder(backend.lms_url).school().write()
    before = snapshot_lms(backend.lms_url)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LMS_", "DAGSTER_HOME"))}
    env = {**base, "LMS_HOME": str(tmp_path), "LMS_DATABASE_URL": backend.lms_url}
    demo = [sys.executable, "-m", "lms_activity_pipeline.cli", "demo", "--students", "4", "--days", "1"]

    proc = subprocess.run(demo, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stdout) == (2, "")
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("lms-activity: configuration error: LMS_DATABASE_URL=") and "is not a demo LMS" in line
    assert "(Attempts, ContentAttempts, Contents, Courses, Exams and 2 more)" in line and "--force" in line
    assert snapshot_lms(backend.lms_url) == before

    forced = subprocess.run([*demo, "--force"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert forced.returncode == 0, forced.stderr
    assert snapshot_lms(backend.lms_url)["Users"] != before["Users"]
    again = subprocess.run(demo, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr  # now a demo: refreshed without --force


def snapshot_lms(url: str) -> dict[str, list[tuple]]:
    """Every row of the reference tables, as stored."""
    engine = sa.create_engine(url)
    names = ["Users", "Courses", "Exams", "Contents", "MentorAssignments", "Attempts", "ContentAttempts"]
    with engine.connect() as conn:
        rows = {name: sorted(map(tuple, conn.execute(sa.text(f'SELECT * FROM "{name}"')).all())) for name in names}
    engine.dispose()
    return rows


def test_configuration_is_checked_before_anything_is_created(tmp_path: Path) -> None:
    """An unreachable warehouse with the default demo LMS: one line, no demo LMS written, no Dagster home."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LMS_", "DAGSTER_HOME"))}
    env = {
        **base,
        "LMS_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "LMS_WAREHOUSE_URL": "postgresql://postgres@127.0.0.1:9/nowhere",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "lms_activity_pipeline.cli", "monitor", "--once"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("lms-activity: configuration error: LMS_WAREHOUSE_URL: cannot connect to")
    assert not (tmp_path / "home" / "demo_lms.sqlite3").exists() and not (tmp_path / "dagster_home").exists()


def test_dagster_cli_materializes_a_partition(tmp_path: Path) -> None:
    backend = Backend("sqlite", f"sqlite:///{tmp_path / 'lms.sqlite3'}", f"sqlite:///{tmp_path / 'wh.sqlite3'}")
    b = LMSBuilder(backend.lms_url).school()
    b.attempt(1, 1, 200, "graded", t(3, 10), submitted_at=t(3, 10, 30), graded_at=t(3, 11), score=42).write()
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LMS_")},
        "DAGSTER_HOME": str(home),
        "LMS_DATABASE_URL": backend.lms_url,
        "LMS_WAREHOUSE_URL": backend.warehouse_url,
        "LMS_PARTITIONS_START": "2024-05-01",
    }
    materialize(env, list(names.INGEST_ASSETS), "--partition", "2024-05-03")
    pipe = Pipeline(backend)
    assert set(pipe.event_ids()) == {"exam:1:exam_started", "exam:1:exam_completed", "exam:1:exam_passed"}
    instance = DagsterInstance.from_config(str(home))
    runs = instance.get_runs()
    assert len(runs) == 1 and runs[0].status == DagsterRunStatus.SUCCESS
    assert runs[0].tags["dagster/partition"] == "2024-05-03"

    # A range is one run (single-run backfill policy) and re-covering a loaded day changes nothing there.
    b.attempt(2, 2, 201, "submitted", t(5, 9), submitted_at=t(5, 9, 30)).write()
    materialize(env, list(names.INGEST_ASSETS), "--partition-range", "2024-05-03...2024-05-05")
    runs = DagsterInstance.from_config(str(home)).get_runs()
    assert len(runs) == 2 and runs[0].status == DagsterRunStatus.SUCCESS
    assert (runs[0].tags["dagster/asset_partition_range_start"], runs[0].tags["dagster/asset_partition_range_end"]) == (
        "2024-05-03",
        "2024-05-05",
    )
    assert set(pipe.event_ids()) == {
        "exam:1:exam_started",
        "exam:1:exam_completed",
        "exam:1:exam_passed",
        "exam:2:exam_started",
        "exam:2:exam_completed",
    }
    [events] = [
        e
        for e in DagsterInstance.from_config(str(home)).all_logs(runs[0].run_id)
        if e.dagster_event
        and e.dagster_event.is_step_materialization
        and e.dagster_event.asset_key.to_user_string() == "lms_activity_events"
    ][-1:]
    meta = events.dagster_event.step_materialization_data.materialization.metadata
    assert (meta["rows_inserted"].value, meta["rows_updated"].value, meta["rows_unchanged"].value) == (2, 0, 3)
