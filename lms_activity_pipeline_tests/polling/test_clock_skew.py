"""An app server whose clock runs fast writes rows "from the future": the cursor must not jump there."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
from dagster import DagsterInstance

from lms_activity_pipeline import names
from lms_activity_pipeline.lms.reader import LMSReader
from lms_activity_pipeline.polling.plan import Cursor, plan_poll
from lms_activity_pipeline.settings import load_settings
from lms_activity_pipeline.warehouse import poll_state
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.cli.test_cli import env_for, live_school, recent, run_cli
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.polling.test_sensor import Tick
from lms_activity_pipeline_tests.support.pipeline import Pipeline, metadata

SKEW = dt.timedelta(minutes=10)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def noon_zone() -> str:
    """A time zone where it is about noon: today's partition ends hours from now, whenever the test runs."""
    offset = 12 - dt.datetime.now(dt.UTC).hour  # -11 .. +12
    return f"Etc/GMT{-offset:+d}"  # (Etc/GMT-5 is UTC+5)


def window(request) -> tuple[str, str]:
    config = request.run_config["ops"]["lms_activity_events"]["config"]
    return config["changed_since"], config["changed_until"]


def test_sensor_keeps_its_mark_at_the_lms_clock_and_ingests_future_rows_once(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    lms = live_school(backend)
    tick = Tick(
        backend, LMS_PARTITIONS_START=(dt.date.today() - dt.timedelta(days=3)).isoformat(), LMS_TIMEZONE=noon_zone()
    )
    tick.instance = tick.pipe.instance

    def launch(request):
        result = tick.pipe.defs.resolve_job_def("lms_ingest_job").execute_in_process(
            run_config=request.run_config,
            instance=tick.instance,
            partition_key=request.partition_key,
            tags={**request.tags, "dagster/run_key": request.run_key},
        )
        assert result.success
        return result

    launch(tick().run_requests[0])  # the history
    assert not tick().run_requests

    # The fast server writes one attempt dated 10 minutes ahead.
    ahead = now() + SKEW
    lms.attempt(20, 1, 201, "in_progress", now() - dt.timedelta(minutes=2), updated_at=ahead).write()
    capsys.readouterr()
    [first] = tick().run_requests
    assert first.tags["lms/changed_rows"] == "1" and first.tags[names.FUTURE_ROWS_TAG] == "1"
    assert window(first)[1] == ahead.isoformat()  # the future row is in this run's window
    assert "1 LMS row(s) have an updated_at after the LMS database's now()" in capsys.readouterr().err  # the tick's log
    marks = json.loads(tick.cursor)
    assert pd.Timestamp(marks["attempts"][0]) <= pd.Timestamp(now())  # the mark stays at the LMS's clock
    meta = metadata(launch(first), "raw_exam_attempts")
    assert meta["rows_dated_in_future"] == 1
    assert "exam:20:exam_started" in tick.pipe.event_ids()

    # Nothing new: no run, though the row is still in the future (not requested again), and the skip says so.
    again = tick()
    assert not again.run_requests
    assert "1 LMS row(s) have an updated_at after the LMS database's now()" in again.skip_message

    # The correct-clock servers go on writing, below the future row's time: those rows are picked up.
    lms.attempt(21, 2, 201, "in_progress", now() - dt.timedelta(minutes=1), updated_at=now()).write()
    [second] = tick().run_requests
    assert (
        second.tags["lms/changed_rows"] == "1" and names.FUTURE_ROWS_TAG not in second.tags
    )  # the future row is not read again
    assert window(second)[1] < ahead.isoformat()
    launch(second)
    assert "exam:21:exam_started" in tick.pipe.event_ids()
    assert not tick().run_requests


def test_monitor_once_warns_about_future_rows_and_still_sees_the_rows_below_them(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server two days fast: its row would land in a partition that does not exist yet, so it waits for its
    day (said in the warning); the rows of the other servers, below it, go on being ingested."""
    lms = live_school(backend)
    env = env_for(backend, tmp_path, LMS_TIMEZONE=noon_zone())
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    capsys.readouterr()

    ahead = now() + dt.timedelta(days=2)
    lms.attempt(20, 1, 201, "in_progress", ahead - dt.timedelta(minutes=5), updated_at=ahead).write()
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    out = capsys.readouterr().out
    assert "No LMS changes" in out
    assert "warning: 1 LMS row(s) have an updated_at after the LMS database's now(), up to 172" in out
    assert "1 of them dated after today wait for their day's partition" in out

    lms.attempt(21, 2, 201, "in_progress", recent(0.05), updated_at=now()).write()
    assert run_cli(monkeypatch, env, "monitor", "--once") == 0
    out = capsys.readouterr().out
    assert "1 changed LMS rows" in out and "stored" in out and "warning: 1 LMS row(s)" in out
    assert "exam:21:exam_started" in Pipeline(backend).event_ids()
    assert not any(r.tags.get(names.FUTURE_ROWS_TAG) for r in DagsterInstance.get().get_runs())

    # Two days later (the pipeline's clock; the LMS's is real) its day exists: the next poll hands it to a run.
    monitor_state = Pipeline(backend).table(wh.lms_monitor_state, "name").set_index("name")
    settings = load_settings({**env, "LMS_TIMEZONE": noon_zone()})
    later = plan_poll(
        LMSReader(backend.lms_url),
        Cursor.from_json(monitor_state.loc[poll_state.POLLER, "cursor"]),
        timezone=settings.timezone,
        partitions_start=settings.partitions_start,
        now=ahead + dt.timedelta(hours=1),
    )
    assert later.plan is not None and later.plan.rows == 1 and later.plan.future_rows == 1
    assert later.plan.changed_until == ahead
