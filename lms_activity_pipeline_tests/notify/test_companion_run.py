"""The companion notify run (``lms_webhook_sensor``): launched beside an ingest run, it waits for that run and
sends what it enqueued at once; ``notify_mentors_after_ingest`` then launches no second notify run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from lms_activity_pipeline import names
from lms_activity_pipeline.defs import runs
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip
from lms_activity_pipeline_tests.support.notify_helpers import add_mentors, fast_zulip, recent_days, recent_school
from lms_activity_pipeline_tests.support.pipeline import Pipeline, op_metadata


def ingest_request(run_key: str) -> dg.RunRequest:
    partition_key, tags = runs.partition_tags(*recent_days())
    return dg.RunRequest(run_key=run_key, job_name=names.INGEST_JOB, partition_key=partition_key, tags=tags)


def after_ingest(pipe: Pipeline, run: dg.ExecuteInProcessResult) -> dg.RunRequest | dg.SkipReason:
    """``notify_mentors_after_ingest`` evaluated on the finished ingest run, as the daemon does."""
    sensor = pipe.defs.resolve_sensor_def(names.NOTIFY_AFTER_INGEST_SENSOR)
    with dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=run.get_run_success_event(),
        dagster_instance=pipe.instance,
        dagster_run=pipe.instance.get_run_by_id(run.run_id),
        resources=pipe.defs.resources,
    ) as context:
        return sensor(context)


@pytest.fixture
def pipe(backend: Backend, fake_zulip: FakeZulip, tmp_path: Path) -> Pipeline:
    recent_school(backend.lms_url)
    add_mentors(fake_zulip)
    (tmp_path / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home"))
    return Pipeline(backend, instance=instance, resources={"zulip": fast_zulip(fake_zulip)})


def test_the_companion_waits_for_its_ingest_run_then_sends_and_the_run_status_sensor_skips(
    pipe: Pipeline, fake_zulip: FakeZulip
) -> None:
    ingest = ingest_request("poll-companion-1")
    companion = runs.companion_notify_request(ingest)
    assert companion.tags[names.COMPANION_OF_TAG] == "poll-companion-1" and companion.job_name == names.NOTIFY_JOB
    results: list[dg.ExecuteInProcessResult] = []
    waiting = threading.Thread(target=lambda: results.append(runs.execute(pipe.defs, pipe.instance, companion)))
    waiting.start()  # launched first: it waits for an ingest run that does not exist yet
    time.sleep(1.5)
    assert waiting.is_alive() and fake_zulip.messages == []

    ingested = runs.execute(pipe.defs, pipe.instance, ingest)
    assert ingested.success
    waiting.join(60)
    [sent] = results
    assert sent.success and op_metadata(sent)["sent"] == 12 and len(fake_zulip.messages) == 4
    assert pipe.instance.get_run_by_id(sent.run_id).tags[names.COMPANION_SAW_TAG] == "finished"
    skipped = after_ingest(pipe, ingested)
    assert isinstance(skipped, dg.SkipReason) and f"companion notify run {sent.run_id}" in (skipped.skip_message or "")


def test_a_companion_that_stopped_waiting_leaves_the_ingest_run_to_the_run_status_sensor(pipe: Pipeline) -> None:
    ingest = ingest_request("poll-companion-2")
    companion = runs.companion_notify_request(ingest)
    config = companion.run_config["ops"][names.NOTIFY_OP]["config"]
    impatient = companion.with_replaced_attrs(
        run_config={"ops": {names.NOTIFY_OP: {"config": {**config, "wait_for_ingest_minutes": 0.01}}}}
    )
    gave_up = runs.execute(pipe.defs, pipe.instance, impatient)  # no ingest run: stops waiting after 0.6 s
    assert gave_up.success and op_metadata(gave_up)["sent"] == 0
    assert pipe.instance.get_run_by_id(gave_up.run_id).tags[names.COMPANION_SAW_TAG] == "timeout"

    ingested = runs.execute(pipe.defs, pipe.instance, ingest)  # enqueues 12 pairs after the companion ended
    requested = after_ingest(pipe, ingested)
    assert isinstance(requested, dg.RunRequest) and requested.run_key == f"notify-after-{ingested.run_id}"
