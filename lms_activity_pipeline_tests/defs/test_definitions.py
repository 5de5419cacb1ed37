"""The code location loads, and carries every name the product promises (docs/architecture.md)."""

from __future__ import annotations

import pytest
from dagster import AssetKey

from lms_activity_pipeline import names
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.support.pipeline import load_definitions

pytestmark = pytest.mark.unit


def test_definitions_carry_every_contract_name(tmp_path) -> None:
    defs = load_definitions({"LMS_HOME": str(tmp_path)})
    graph = defs.resolve_asset_graph()
    activity = {
        names.RAW_EXAM_ATTEMPTS,
        names.RAW_CONTENT_ATTEMPTS,
        names.LMS_ACTIVITY_EVENTS,
        names.AI_READY_EVENTS,
        names.STUDENT_DAILY_ACTIVITY,
    }
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    risk = {names.STUDENT_RISK, names.RISK_DIGEST_LOG, names.RISK_FEEDBACK, names.RISK_MODELS}
    bookkeeping = {names.LMS_EVENT_LOG, names.ZULIP_USER_CACHE, names.LMS_MONITOR_STATE, names.LMS_ALERT_INCIDENTS}
    bookkeeping |= {names.MENTOR_NOTIFICATION_PREFERENCES, names.MENTOR_DIGEST_STATE}  # issue 12
    service = {names.LMS_SERVICE_TOKENS, names.LMS_WEBHOOK_INBOX}
    assert activity | bookkeeping | risk | service == keys
    for key in activity:
        node = graph.get(AssetKey(key))
        assert (
            node.group_name == names.ACTIVITY_GROUP
            and node.partitions_def is not None
            and defs.get_assets_def(key).op.pool == names.INGEST_POOL
        )
    assert {j.name for j in defs.resolve_all_job_defs()} >= {names.INGEST_JOB, names.NOTIFY_JOB, names.QUALITY_JOB}
    assert [node.name for node in defs.resolve_job_def(names.NOTIFY_JOB).nodes] == [names.NOTIFY_OP]
    assert {s.name for s in defs.sensors or []} == {
        names.ACTIVITY_SENSOR,
        names.WEBHOOK_SENSOR,
        names.NOTIFY_AFTER_INGEST_SENSOR,
        names.RUN_FAILURE_ALERTS_SENSOR,
        names.HEALTH_ALERTS_SENSOR,
    }
    assert {s.name for s in defs.schedules or []} == {
        names.NOTIFY_RETRY_SCHEDULE,
        names.RISK_SCHEDULE,
        names.RISK_FEEDBACK_SCHEDULE,
    }
    checks = {k.name for k in graph.asset_check_keys if k.asset_key == AssetKey(names.LMS_ACTIVITY_EVENTS)}
    assert checks == {
        "event_key_unique",
        "event_types_known",
        "percentages_in_range",
        "no_future_events",
        "students_exist_in_lms",
    }
    assert set(defs.resources or {}) == {"lms", "warehouse", "settings", "zulip", "alerts", "risk"}
    # students at risk
    node = graph.get(AssetKey(names.STUDENT_RISK))
    assert node.group_name == names.RISK_GROUP and node.partitions_def is not None
    assert {k.name for k in graph.asset_check_keys if k.asset_key == AssetKey(names.STUDENT_RISK)} == {
        names.RISK_REASONS_CHECK
    }
    assert names.RISK_JOB in {j.name for j in defs.resolve_all_job_defs()}
    assert {t.name for t in wh.METADATA.sorted_tables} == keys  # every warehouse table is in the catalog
