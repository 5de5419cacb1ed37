"""Every name Dagster, the UI, the CLI and the tests know this pipeline by: one place, no literals elsewhere.

The asset, job, op, sensor and group names are part of the product's contract (analysts, operators and
acceptance tests use them); the tags and pools are how runs are found and queued.
"""

from __future__ import annotations

from typing import Final

# --- assets and groups --------------------------------------------------------------------------
RAW_EXAM_ATTEMPTS: Final = "raw_exam_attempts"
RAW_CONTENT_ATTEMPTS: Final = "raw_content_attempts"
LMS_ACTIVITY_EVENTS: Final = "lms_activity_events"
AI_READY_EVENTS: Final = "ai_ready_events"
STUDENT_DAILY_ACTIVITY: Final = "student_daily_activity"
#: The assets an ingest run materialises, in order (staging, then classification).
INGEST_ASSETS: Final = (RAW_EXAM_ATTEMPTS, RAW_CONTENT_ATTEMPTS, LMS_ACTIVITY_EVENTS)
#: Tables written outside the partitioned assets, declared as external assets.
LMS_EVENT_LOG: Final = "lms_event_log"
ZULIP_USER_CACHE: Final = "zulip_user_cache"
LMS_MONITOR_STATE: Final = "lms_monitor_state"

ACTIVITY_GROUP: Final = "lms_activity"
BOOKKEEPING_GROUP: Final = "lms_bookkeeping"

# --- jobs, ops, sensors, schedules -------------------------------------------------------------
INGEST_JOB: Final = "lms_ingest_job"
NOTIFY_JOB: Final = "notify_mentors_job"
QUALITY_JOB: Final = "lms_quality_checks_job"
NOTIFY_OP: Final = "send_mentor_notifications"
ACTIVITY_SENSOR: Final = "lms_activity_sensor"
NOTIFY_AFTER_INGEST_SENSOR: Final = "notify_mentors_after_ingest"
#: Polls at once when LMS webhooks wait in ``lms_webhook_inbox`` (the same poll as ``lms_activity_sensor``).
WEBHOOK_SENSOR: Final = "lms_webhook_sensor"
NOTIFY_RETRY_SCHEDULE: Final = "notify_mentors_retry_schedule"
#: The job Dagster runs for materialisations and backfills launched from the asset pages.
IMPLICIT_ASSET_JOB: Final = "__ASSET_JOB"

# --- concurrency --------------------------------------------------------------------------------
#: Pool of every asset that writes the ingest and feature tables (limit 1, run granularity).
INGEST_POOL: Final = "lms_ingest"

# --- run tags -----------------------------------------------------------------------------------
#: Who launched a run: ``sensor``, ``cli``, ``ingest`` (after an ingest run), ``schedule``, ...
TRIGGER_TAG: Final = "lms/trigger"
#: Changed LMS rows an incremental ingest run covers.
CHANGED_ROWS_TAG: Final = "lms/changed_rows"
#: Of those, rows whose ``updated_at`` is after the LMS database's now.
FUTURE_ROWS_TAG: Final = "lms/rows_dated_in_future"
#: The ingest run a notify run follows.
INGEST_RUN_ID_TAG: Final = "lms/ingest_run_id"
#: Every notify run (the production queue allows one at a time).
NOTIFY_TAG: Final = "lms/notify"
#: On a notify run started beside an ingest run (``lms_webhook_sensor``): that ingest run's run key.
COMPANION_OF_TAG: Final = "lms/companion_of"
#: Set by the companion when it stops waiting: ``finished`` (its ingest run ended) or ``timeout``.
COMPANION_SAW_TAG: Final = "lms/companion_saw"

# Dagster's own tags the pipeline reads or sets.
RUN_KEY_TAG: Final = "dagster/run_key"
PARTITION_TAG: Final = "dagster/partition"
RANGE_START_TAG: Final = "dagster/asset_partition_range_start"
RANGE_END_TAG: Final = "dagster/asset_partition_range_end"
MAX_RUNTIME_TAG: Final = "dagster/max_runtime"
BACKFILL_TAG: Final = "dagster/backfill"
WILL_RETRY_TAG: Final = "dagster/will_retry"

# --- metadata keys read back from runs ------------------------------------------------------------
ROW_COUNT: Final = "dagster/row_count"
ROWS_REJECTED: Final = "rows_rejected"

# --- operational alerts (issue 15) ----------------------------------------------------------------
#: Alerts when a run of the ingest or notify jobs failed for good (after Dagster's retries).
RUN_FAILURE_ALERTS_SENSOR: Final = "lms_run_failure_alerts"
#: Evaluates the health checks (backlog, lag, sensor errors, failing mentors, uncertain deliveries).
HEALTH_ALERTS_SENSOR: Final = "lms_health_alerts"
#: The alert incidents table (an external asset of lms_bookkeeping).
LMS_ALERT_INCIDENTS: Final = "lms_alert_incidents"
#: Asset checks on lms_event_log.
BACKLOG_CHECK: Final = "notification_backlog"
DEAD_LETTER_CHECK: Final = "dead_letter"

# --- mentor notification preferences (issue 12) --------------------------------------------------
MENTOR_NOTIFICATION_PREFERENCES: Final = "mentor_notification_preferences"
MENTOR_DIGEST_STATE: Final = "mentor_digest_state"

# --- students at risk ---------------------------------------------------------------------------
STUDENT_RISK: Final = "student_risk"
RISK_FEEDBACK: Final = "risk_feedback"
RISK_DIGEST_LOG: Final = "risk_digest_log"
RISK_GROUP: Final = "lms_risk"
RISK_FEEDBACK_JOB: Final = "risk_feedback_job"
RISK_REASONS_CHECK: Final = "flagged_rows_have_reasons"
RISK_JOB: Final = "student_risk_job"
RISK_SCHEDULE: Final = "student_risk_schedule"
RISK_FEEDBACK_SCHEDULE: Final = "risk_feedback_schedule"

# --- integration service (lms-activity serve): its bookkeeping tables, external assets -------------------
LMS_SERVICE_TOKENS: Final = "lms_service_tokens"
LMS_WEBHOOK_INBOX: Final = "lms_webhook_inbox"

# --- learned at-risk model (issue 13, LMS_RISK_MODEL=learned) ---
RISK_MODELS: Final = "risk_models"
