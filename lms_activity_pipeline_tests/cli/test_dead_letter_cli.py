"""The dead letter in ``lms-activity monitor --stats``, and ``--process-pending`` emptying it."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.cli.test_cli import env_for, live_school, run_cli
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.pipeline import Pipeline


def test_stats_show_the_dead_letter_and_process_pending_retries_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = Backend("sqlite", f"sqlite:///{tmp_path / 'lms.sqlite3'}", f"sqlite:///{tmp_path / 'wh.sqlite3'}")
    live_school(backend)
    env = env_for(backend, tmp_path)
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    pipe = Pipeline(backend)
    log = wh.lms_event_log
    pairs, mentors = pipe.count(log), pipe.log_rows()["mentor_id"].nunique()
    assert pairs >= 2
    # Zulip rejected them until the attempt cap: no automatic run takes them again.
    pipe.execute(log.update().values(status="failed", attempts=6, error_message="HTTP 400: rejected"))
    capsys.readouterr()
    assert run_cli(monkeypatch, env, "monitor", "--stats") == 0
    out = capsys.readouterr().out
    assert (
        f"dead letter:        {pairs} pairs of {mentors} mentors (not retried automatically; after a fix: "
        "lms-activity monitor --process-pending)" in out
    )

    assert run_cli(monkeypatch, env, "monitor", "--process-pending") == 0  # no Zulip configured: dry-run
    with pipe.warehouse.engine.connect() as conn:
        assert set(conn.execute(sa.select(log.c.status)).scalars()) == {"dry_run"}
    capsys.readouterr()
    assert run_cli(monkeypatch, env, "monitor", "--stats") == 0
    assert "dead letter:        0 pairs of 0 mentors\n" in capsys.readouterr().out
