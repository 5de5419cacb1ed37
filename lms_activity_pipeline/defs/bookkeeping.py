"""Warehouse tables written outside the partitioned assets, declared so the catalog shows them.

``lms_event_log`` (the notification outbox: rows enqueued by
``lms_activity_events``, sent and recorded by ``notify_mentors_job``),
``zulip_user_cache`` and ``lms_monitor_state`` are external assets: Dagster
does not materialise them, but the catalog lists their columns, types and
lineage, and ``notify_mentors_job`` reports ``lms_event_log``'s status counts
on it after every run.
"""

from __future__ import annotations

import sqlalchemy as sa
from dagster import AssetSpec

from lms_activity_pipeline import names
from lms_activity_pipeline.defs import metadata as md
from lms_activity_pipeline.warehouse import schema as wh

#: Each table, what writes it, and the assets it is derived from.
TABLES: tuple[tuple[sa.Table, str, tuple[str, ...]], ...] = (
    (
        wh.lms_event_log,
        "Notification outbox and audit log: one row per (event, mentor), enqueued by lms_activity_events, "
        "sent and recorded by notify_mentors_job.",
        (names.LMS_ACTIVITY_EVENTS,),
    ),
    (
        wh.zulip_user_cache,
        "Mentor e-mail -> Zulip account, cached by notify_mentors_job so each mentor is looked up once per expiry.",
        (),
    ),
    (
        wh.lms_monitor_state,
        "The LMS poll's cursor, shared by lms_activity_sensor and `lms-activity monitor`.",
        (),
    ),
    (
        wh.lms_alert_incidents,
        "Operational alert incidents (one row per dedup key), written by lms_run_failure_alerts and lms_health_alerts.",
        (),
    ),
    # mentor notification preferences (issue 12)
    (
        wh.mentor_notification_preferences,
        "Mentors' notification preferences (frequency, time zone, quiet hours, snooze) per scope, "
        "written by `lms-activity prefs`, read by notify_mentors_job.",
        (),
    ),
    (
        wh.mentor_digest_state,
        "When each mentor's last scheduled digest went out, written by notify_mentors_job.",
        (),
    ),
    # integration service (lms-activity serve)
    (
        wh.lms_service_tokens,
        "Bearer tokens of the REST API and dashboard (salted hashes), written by `lms-activity token`.",
        (),
    ),
    (
        wh.lms_webhook_inbox,
        "LMS webhooks recorded by `lms-activity serve`; lms_activity_sensor ingests the announced rows.",
        (),
    ),
)


bookkeeping_tables = [
    AssetSpec(
        table.name,
        deps=list(deps),
        group_name=names.BOOKKEEPING_GROUP,
        kinds={"sql"},
        metadata=md.table_metadata(table),
        description=description,
    )
    for table, description, deps in TABLES
]
