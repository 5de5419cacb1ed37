"""LMS values the pipeline cannot read: text that is not UTF-8, timestamps Python cannot hold.

Each is rejected (or, for display text, kept with U+FFFD) with a reason naming the column, and
counted; none sinks a run or stops the cursor, none vanishes unseen.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from dagster import DagsterInstance
from sqlalchemy.engine import make_url

from lms_activity_pipeline.db import normalise_url
from lms_activity_pipeline.polling.plan import Cursor
from lms_activity_pipeline_tests.cli.test_cli import env_for, recent, run_cli
from lms_activity_pipeline_tests.conftest import Backend, PgDatabases
from lms_activity_pipeline_tests.polling.test_sensor import Tick
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder, t
from lms_activity_pipeline_tests.support.pipeline import Pipeline, metadata

LATIN1_E_ACUTE = "E9"  # "é" in Latin-1: not UTF-8 on its own


def sql_ascii_database(pg: PgDatabases) -> str:
    """A PostgreSQL database with encoding SQL_ASCII: it stores whatever bytes a client sends."""
    name = f"lms_ascii_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(normalise_url(pg.server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            sa.text(f"CREATE DATABASE \"{name}\" ENCODING 'SQL_ASCII' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
        )
    admin.dispose()
    pg.created.append(name)
    return make_url(pg.server_url).set(database=name).render_as_string(hide_password=False)


def latin1(backend: Backend, text: str, byte: str = LATIN1_E_ACUTE) -> str:
    """SQL for ``text`` followed by one Latin-1 byte, stored as is."""
    if backend.name == "sqlite":
        return f"CAST(X'{text.encode().hex()}{byte}' AS TEXT)"
    return f"'{text}' || E'\\x{byte.lower()}'"


@pytest.fixture
def latin1_backend(backend: Backend, request: pytest.FixtureRequest) -> Backend:
    """The backend, its LMS able to hold bytes that are not UTF-8 (SQLite as is; PostgreSQL in SQL_ASCII)."""
    if backend.name == "sqlite":
        return backend
    return Backend(backend.name, sql_ascii_database(request.getfixturevalue("pg_databases")), backend.warehouse_url)


def test_text_that_is_not_utf8_is_replaced_or_rejected_and_reported(
    latin1_backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A course title (and a student's name) stored as Latin-1 bytes used to fail every run with
    ``Could not decode to UTF-8 column 'title'`` (SQLite) or UnicodeDecodeError (PostgreSQL SQL_ASCII):
    the cursor never moved. Now the title is kept with U+FFFD, an attempt whose status is unreadable
    is rejected, both are reported, and the rest is stored."""
    backend = latin1_backend
    b = LMSBuilder(backend.lms_url).school()
    b.attempt(1, 1, 200, "graded", recent(3), submitted_at=recent(2.5), graded_at=recent(2), score=40)
    b.attempt(2, 2, 200, "in_progress", recent(2))
    b.write()
    b.execute(f'UPDATE "Courses" SET title = {latin1(backend, "Alg")} WHERE id = 100')
    b.execute(f'UPDATE "Users" SET full_name = {latin1(backend, "Ren")} WHERE id = 1')
    b.execute(f'UPDATE "Attempts" SET status = {latin1(backend, "in_progr")} WHERE id = 2')
    env = env_for(backend, tmp_path)

    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    assert "stored" in capsys.readouterr().out
    events = Pipeline(backend).events().set_index("event_key")
    assert set(events.index) == {"exam:1:exam_started", "exam:1:exam_completed", "exam:1:exam_passed"}
    assert events.loc["exam:1:exam_passed", "course_title"] == "Alg\ufffd"
    assert events.loc["exam:1:exam_passed", "activity_metadata"]["student_name"] == "Ren\ufffd"

    instance = DagsterInstance.get()
    [run] = [r for r in instance.get_runs() if r.job_name == "lms_ingest_job"]
    meta = materialisations(instance, run.run_id)
    assert meta["raw_exam_attempts"]["rows_rejected"] == 1
    assert "status: text that is not UTF-8: in_progr\ufffd" in meta["raw_exam_attempts"]["rejected_preview"]
    notes = meta["lms_activity_events"]["rejected_preview"]
    assert "title: text that is not UTF-8, kept as Alg\ufffd (row kept)" in notes
    assert "full_name: text that is not UTF-8, kept as Ren\ufffd (row kept)" in notes

    # The cursor moved: the next poll finds nothing new.
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    assert "No LMS changes" in capsys.readouterr().out


def materialisations(instance: DagsterInstance, run_id: str) -> dict[str, dict]:
    """The metadata values of each asset materialised in the run (the last one of each)."""
    found: dict[str, dict] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.is_step_materialization:
            materialization = event.step_materialization_data.materialization
            found[materialization.asset_key.to_user_string()] = {
                k: v.value for k, v in materialization.metadata.items()
            }
    return found


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)  # SQLite has no infinity or BC dates
def test_timestamps_python_cannot_hold_are_rejected_naming_the_column(backend: Backend) -> None:
    """PostgreSQL returns ``infinity``, ``-infinity`` and BC dates; pandas cannot hold them. Before, rows
    with such an ``updated_at`` vanished unseen (``-infinity``: never in any window; ``infinity``: dropped by
    the poll, and it hid the table's high-water mark), an ``infinity`` ``started_at`` was never read by a
    recompute, and a bad ``assigned_at`` was "missing or invalid required column"."""
    b = LMSBuilder(backend.lms_url, strict=False).school()
    b.attempt(1, 1, 200, "graded", t(3, 10), submitted_at=t(3, 10, 30), graded_at=t(3, 11), score=42)  # good
    b.attempt(2, 1, 200, "in_progress", "0044-03-15 BC", updated_at=t(3, 12))  # alice: her attempts are numbered
    b.attempt(3, 2, 201, "in_progress", t(3, 9), updated_at="infinity")
    b.attempt(4, 3, 201, "submitted", t(3, 9), submitted_at="infinity", updated_at=t(3, 13))
    b.attempt(
        5, 3, 200, "graded", t(3, 9), submitted_at=t(3, 9, 30), graded_at="-infinity", score=40, updated_at=t(3, 14)
    )
    b.attempt(6, 1, 201, "in_progress", t(3, 9), updated_at="-infinity")
    b.content_attempt(1, 1, 300, "completed", t(3, 8), completed_at="0001-01-01 BC", updated_at=t(3, 8, 30))
    b.content_attempt(2, 2, 301, "in_progress", "infinity", updated_at=t(3, 15))
    b.assign(7, 3, 10, "-infinity")
    b.assign(8, 1, 11, t(1, 0), ended_at="infinity")
    b.write()

    tick = Tick(backend)
    [history] = tick().run_requests  # the high-water mark is readable despite 'infinity'
    assert history.tags["dagster/asset_partition_range_start"] == "2024-05-03"  # the oldest readable start
    marks = Cursor.from_json(tick.cursor).marks
    assert marks["attempts"].updated_at == t(3, 14).isoformat()  # not None, not infinity
    skipped = tick()
    assert not skipped.run_requests
    assert "Attempts id=3: updated_at: invalid or missing value infinity" in skipped.skip_message

    pipe = tick.pipe
    result = pipe.ingest("2024-05-03")
    assert set(pipe.event_ids()) == {"exam:1:exam_started", "exam:1:exam_completed", "exam:1:exam_passed"}
    exams = metadata(result, "raw_exam_attempts")
    assert exams["rows_rejected"] == 5
    for reason in (
        "started_at: invalid or missing value 0044-03-1",  # (the offset shown depends on the server's TimeZone)
        "updated_at: invalid or missing value infinity",
        "submitted_at: invalid or missing value infinity",
        "graded_at: invalid or missing value -infinity",
        "updated_at: invalid or missing value -infinity",
    ):
        assert reason in exams["rejected_preview"], reason
    contents = metadata(result, "raw_content_attempts")
    assert contents["rows_rejected"] == 2
    assert "completed_at: invalid or missing value 000" in contents["rejected_preview"]
    assert "started_at: invalid or missing value infinity" in contents["rejected_preview"]
    events = metadata(result, "lms_activity_events")
    assert "assigned_at: invalid or missing value -infinity" in events["rejected_preview"]
    assert "ended_at: invalid value infinity ignored (row kept)" in events["rejected_preview"]
    assert events["history_rows_unreadable"] == 1  # attempt 2, left out of attempt numbers, and said so
    logs = [e.message for e in pipe.instance.all_logs(result.run_id) if "left out of attempt numbers" in e.message]
    assert any("Attempts row id=2: started_at: invalid or missing value 0044-03-15" in m for m in logs)
    assert pd.notna(pipe.events()["timestamp"]).all()
