"""``lms-activity risk [--course] [--level] [--refresh]`` and ``api.students_at_risk`` on live-dated data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dagster import DagsterInstance

from lms_activity_pipeline import api, cli, names
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder
from lms_activity_pipeline_tests.support.pipeline import Pipeline


def ago(hours: float) -> dt.datetime:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)).replace(microsecond=0)


def env_for(backend: Backend, tmp_path: Path) -> dict[str, str]:
    return {
        "LMS_DATABASE_URL": backend.lms_url,
        "LMS_WAREHOUSE_URL": backend.warehouse_url,
        "LMS_HOME": str(tmp_path / "lms_home"),
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "LMS_PARTITIONS_START": (dt.date.today() - dt.timedelta(days=14)).isoformat(),
    }


def school(backend: Backend) -> None:
    """Alice started the final 10 days ago and went silent; Bob failed the quiz twice in two days; Carol
    reads; Dave failed an exam of another course once."""
    b = LMSBuilder(backend.lms_url).school().user(4, "dave").course(101, "Biology").exam(210, 101, "Cells quiz")
    b.attempt(1, 1, 201, "abandoned", ago(240), updated_at=ago(239))
    b.attempt(2, 2, 200, "graded", ago(50), submitted_at=ago(49.5), graded_at=ago(49), score=20)
    b.attempt(3, 2, 200, "graded", ago(26), submitted_at=ago(25.5), graded_at=ago(25), score=25)
    b.content_attempt(4, 3, 301, "completed", ago(3), completed_at=ago(2.5), progress_percent=100)
    b.attempt(5, 4, 210, "graded", ago(6), submitted_at=ago(5.5), graded_at=ago(5), score=10)
    b.write()


def run_cli(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> int:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return cli.main(list(args))


def test_risk_refresh_levels_courses_and_api(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    school(backend)
    env = env_for(backend, tmp_path)
    pipe = Pipeline(backend, **{k: v for k, v in env.items() if k.startswith("LMS_PARTITIONS")})
    first, today = (dt.date.today() - dt.timedelta(days=12)).isoformat(), dt.date.today().isoformat()
    pipe.ingest(first, today)

    assert run_cli(monkeypatch, env, "risk") == 0
    assert "No students at risk" in capsys.readouterr().out  # nothing computed yet

    assert run_cli(monkeypatch, env, "risk", "--refresh") == 0
    out = capsys.readouterr().out
    assert f"Students at risk on {today} (medium or worse): 3" in out
    assert "HIGH   0.60  alice (id 1) in Algebra I" in out
    assert "- inactive: no activity in the course for 10 days, with an exam not passed yet" in out
    assert "- failed_in_row: failed Quadratics quiz 2 times in a row" in out
    assert "MEDIUM" in out and "dave (id 4) in Biology" in out and "carol" not in out
    runs = DagsterInstance.get().get_runs()
    assert [r.job_name for r in runs] == [names.RISK_JOB] and runs[0].tags[names.TRIGGER_TAG] == "cli"

    assert run_cli(monkeypatch, env, "risk", "--level", "high", "--course", "100") == 0
    out = capsys.readouterr().out
    assert ": 2" in out and "alice" in out and "bob" in out and "dave" not in out

    flagged = api.students_at_risk()
    assert sorted(flagged["student_id"].astype(int)) == [1, 2, 4]
    assert {r["code"] for r in flagged.set_index("student_id").loc[2, "reasons"]} == {"failed_in_row", "unpassed_exam"}
    assert list(api.students_at_risk(level="high", course_id=101)["student_id"]) == []
    assert len(api.students_at_risk(as_of=today, level="low")) == 4
    assert api.students_at_risk(as_of="2001-01-01").empty
    with pytest.raises(ValueError, match="unknown risk level 'urgent'"):
        api.students_at_risk(level="urgent")

    with pytest.raises(SystemExit) as refused:  # argparse: usage and one line
        run_cli(monkeypatch, env, "risk", "--level", "low")
    assert refused.value.code == 2
    assert "invalid choice: 'low'" in capsys.readouterr().err
