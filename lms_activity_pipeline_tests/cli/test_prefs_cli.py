"""``lms-activity prefs set|clear|show``: stored in ``mentor_notification_preferences``, MENTOR resolved in the LMS."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from lms_activity_pipeline import cli
from lms_activity_pipeline.domain.preferences import QuietHours
from lms_activity_pipeline.warehouse.preferences import PreferenceStore
from lms_activity_pipeline.warehouse.store import Warehouse
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.notify_helpers import recent_school


@pytest.fixture
def prefs_env(backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PreferenceStore:
    recent_school(backend.lms_url)
    monkeypatch.setenv("LMS_DATABASE_URL", backend.lms_url)
    monkeypatch.setenv("LMS_WAREHOUSE_URL", backend.warehouse_url)
    monkeypatch.setenv("LMS_HOME", str(tmp_path / "lms_home"))
    return PreferenceStore(Warehouse(backend.warehouse_url).engine)


def test_set_show_clear_by_id_username_and_email(
    prefs_env: PreferenceStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["prefs", "set", "mentor_m", "--frequency", "daily", "--send-hour", "7"]) == 0
    assert "mentor 10 (mentor_m): all students: daily, at 07:00" in capsys.readouterr().out
    assert (
        cli.main(
            ["prefs", "set", "mentor_m@EXAMPLE.edu", "--student", "1", "--frequency", "off", "--timezone", "Asia/Tokyo"]
        )
        == 0
    )
    # a later set of the same scope keeps what it does not change
    assert cli.main(["prefs", "set", "10", "--quiet-hours", "22:00-07:00", "--snooze-until", "2030-01-02"]) == 0
    capsys.readouterr()
    [everyone, alice] = prefs_env.all([10])
    assert (everyone.scope_kind, everyone.frequency, everyone.send_hour) == ("all", "daily", 7)
    assert everyone.quiet_hours == QuietHours(dt.time(22), dt.time(7))
    assert everyone.snooze_until == dt.date(2030, 1, 2)
    assert (alice.scope_kind, alice.scope_id, alice.frequency, alice.timezone) == ("student", 1, "off", "Asia/Tokyo")

    assert cli.main(["prefs", "show", "mentor_m"]) == 0
    out = capsys.readouterr().out
    assert "mentor 10: all students: daily, at 07:00, quiet 22:00-07:00, snoozed until 2030-01-02" in out
    assert "mentor 10: student 1: off, time zone Asia/Tokyo" in out
    assert "default for mentors without one: immediate (LMS_NOTIFY_DEFAULT_FREQUENCY)" in out

    assert cli.main(["prefs", "clear", "mentor_m", "--student", "1"]) == 0
    assert "cleared preference for student 1" in capsys.readouterr().out
    assert [p.scope_kind for p in prefs_env.all()] == ["all"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["prefs", "set", "nobody"], "MENTOR 'nobody': no LMS user has this id, username or e-mail"),
        (["prefs", "set", "mentor_m", "--send-hour", "25"], "--send-hour 25 must be 0 to 23"),
        (["prefs", "set", "mentor_m", "--timezone", "Mars/Base"], "--timezone 'Mars/Base' is not an IANA time zone"),
        (["prefs", "set", "mentor_m", "--quiet-hours", "22-7"], "--quiet-hours '22-7' is not HH:MM-HH:MM"),
        (["prefs", "set", "mentor_m", "--snooze-until", "tomorrow"], "--snooze-until 'tomorrow' is not a date"),
    ],
)
def test_bad_values_are_one_line_errors_and_store_nothing(
    prefs_env: PreferenceStore, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert prefs_env.all() == []
