"""Warehouse tables written outside the partitioned assets, declared so the catalog shows them.

``lms_event_log`` (the notification outbox: rows enqueued by
``lms_activity_events``, sent and recorded by ``notify_mentors_job``),
``zulip_user_cache`` and ``lms_monitor_state`` are external assets: Dagster
does not materialise them, but the catalog lists their columns, types and
lineage, and ``notify_mentors_job`` reports ``lms_event_log``'s status counts
on it after every run.
"""

from __future__ import annotations

from dagster import AssetKey, AssetSpec

from lms_activity_pipeline.assets import metadata as md
from lms_activity_pipeline.warehouse import schema as wh

GROUP = "lms_bookkeeping"
EVENT_LOG = AssetKey("lms_event_log")


def build_table_specs() -> list[AssetSpec]:
    return [
        AssetSpec(
            EVENT_LOG,
            deps=["lms_activity_events"],
            group_name=GROUP,
            kinds={"sql"},
            metadata=md.table_metadata(wh.lms_event_log),
            description=(
                "Notification outbox and audit log: one row per (event, mentor), enqueued by lms_activity_events, "
                "sent and recorded by notify_mentors_job."
            ),
        ),
        AssetSpec(
            "zulip_user_cache",
            group_name=GROUP,
            kinds={"sql"},
            metadata=md.table_metadata(wh.zulip_user_cache),
            description="Mentor e-mail -> Zulip account, cached by notify_mentors_job so each mentor is looked up once per expiry.",
        ),
        AssetSpec(
            "lms_monitor_state",
            group_name=GROUP,
            kinds={"sql"},
            metadata=md.table_metadata(wh.lms_monitor_state),
            description="The cursor and last poll of `lms-activity monitor` (the sensor keeps its own in Dagster).",
        ),
    ]
