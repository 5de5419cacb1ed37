"""What `monitor --once` and `--stats` say about rows that did not reach lms_activity_events."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.cli.test_cli import env_for, live_school, recent, run_cli
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.polling.test_clock_skew import noon_zone
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder
from lms_activity_pipeline_tests.support.pipeline import Pipeline


def lag(out: str) -> int:
    """The lag ``--stats`` printed, in seconds."""
    found = re.search(r"^lag behind LMS:\s+(\d+) s", out, re.M)
    assert found, out
    return int(found.group(1))


def staged(backend: Backend, table: sa.Table) -> pd.DataFrame:
    """A staged table's ids, versions and classification marks, by id."""
    cols = [table.c.id, table.c.updated_at, table.c._classified_version, table.c._rejected_reason]
    return Pipeline(backend).table(table, "id")[[c.name for c in cols]].set_index("id")


def test_monitor_counts_the_rejects_of_every_step_and_marks_those_of_the_events_step(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Four rejected rows, two by the staging steps and two by the events step: the poll's summary said 2,
    and the two the events step refused stayed in raw_* as if accepted."""
    b = LMSBuilder(backend.lms_url, strict=False).school()
    b.attempt(1, 1, 200, "graded", recent(3), submitted_at=recent(2.9), graded_at=recent(2.8), score=40)  # good
    b.attempt(2, 1, 200, "graded", recent(3), submitted_at=recent(2.9), graded_at=recent(2.8), score="-5")  # staging
    b.content_attempt(1, 3, 300, "in_progress", recent(2), progress_percent="140")  # staging
    b.attempt(3, 2, 999, "in_progress", recent(2))  # events step: no exam 999
    b.content_attempt(2, 77, 301, "in_progress", recent(2), progress_percent="10")  # events step: no user 77
    b.write()
    env = env_for(backend, tmp_path)

    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    out = capsys.readouterr().out
    assert "LMS rows rejected: 4 (raw_exam_attempts 1, raw_content_attempts 1, lms_activity_events 2;" in out
    exams, contents = staged(backend, wh.raw_exam_attempts), staged(backend, wh.raw_content_attempts)
    assert exams.loc[3, "_rejected_reason"] == "exam_id: unknown exam 999"
    assert contents.loc[2, "_rejected_reason"] == "user_id: unknown user 77"
    assert (
        pd.isna(exams.loc[1, "_rejected_reason"]) and exams.loc[1, "_classified_version"] == exams.loc[1, "updated_at"]
    )
    assert 2 not in exams.index and 1 not in contents.index  # refused while staging: never staged

    assert run_cli(monkeypatch, env, "monitor", "--stats") == 0
    out = capsys.readouterr().out
    assert "not in events yet:  2 staged rows (2 rejected by lms_activity_events" in out
    assert lag(out) >= 2 * 3600  # the refused rows changed two hours ago and are still not events

    # The exam is created, the attempt touched: a later run accepts it and the mark is cleared.
    b.exam(999, 100, "Late quiz").write()
    b.execute('UPDATE "Attempts" SET updated_at = :t WHERE id = 3', t=recent(0.01))
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    out = capsys.readouterr().out
    assert "LMS rows rejected: 0 (raw_exam_attempts 0, raw_content_attempts 0, lms_activity_events 0;" in out
    exams = staged(backend, wh.raw_exam_attempts)
    assert (
        pd.isna(exams.loc[3, "_rejected_reason"]) and exams.loc[3, "_classified_version"] == exams.loc[3, "updated_at"]
    )
    assert "exam:3:exam_started" in Pipeline(backend).event_ids()
    assert run_cli(monkeypatch, env, "monitor", "--stats") == 0
    assert "not in events yet:  1 staged rows (1 rejected by lms_activity_events" in capsys.readouterr().out


def test_lag_counts_changes_staged_while_the_events_step_fails_and_rows_below_a_future_one(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The lag compared the LMS's newest updated_at with the newest staged row: 0 s while every run failed
    in the events step (rows are staged before it), and 0 s while a row from the future pinned the cursor."""
    lms = live_school(backend)
    env = env_for(backend, tmp_path, LMS_TIMEZONE=noon_zone())  # a row 10 minutes ahead is still today
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    assert run_cli(monkeypatch, env, "monitor", "--stats") == 0
    assert lag(capsys.readouterr().out) == 0

    # The events step fails (it cannot read the LMS's exams); the staging steps before it succeed.
    lms.execute('ALTER TABLE "Exams" RENAME TO "Exams_moved"')
    lms.attempt(5, 1, 201, "in_progress", recent(0.2), updated_at=recent(0.1)).write()  # six minutes ago
    assert run_cli(monkeypatch, env, "monitor", "--once") == 1
    assert 5 in set(Pipeline(backend).table(wh.raw_exam_attempts, "id")["id"])  # staged before the failing step
    assert run_cli(monkeypatch, env, "monitor", "--stats") == 0
    out = capsys.readouterr().out
    assert 360 <= lag(out) < 360 + 300  # six minutes (and the seconds the test took)
    assert "not in events yet:  1 staged rows (0 rejected by lms_activity_events" in out

    lms.execute('ALTER TABLE "Exams_moved" RENAME TO "Exams"')
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0  # the cursor had not moved: the same change again
    assert run_cli(monkeypatch, env, "monitor", "--stats") == 0
    out = capsys.readouterr().out
    assert lag(out) == 0 and "not in events yet" not in out

    # A row from a clock ten minutes fast is ingested; then a correct-clock row arrives, not polled yet.
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    lms.attempt(6, 2, 201, "in_progress", recent(0.1), updated_at=now + dt.timedelta(minutes=10)).write()
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    lms.attempt(7, 3, 201, "in_progress", recent(0.1), updated_at=recent(0.05)).write()  # three minutes ago
    capsys.readouterr()
    assert run_cli(monkeypatch, env, "monitor", "--stats") == 0
    out = capsys.readouterr().out
    assert 180 <= lag(out) < 180 + 300
    assert "rows from future:   1 LMS rows dated after the LMS's now(), up to" in out and "(0 not in events yet)" in out
