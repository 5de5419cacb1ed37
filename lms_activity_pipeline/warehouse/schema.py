"""Warehouse tables (described in docs/data-dictionary.md): the single source of truth for their schema.

Tables are declared in the placeholder schema :data:`SCHEMA_TOKEN`; the
warehouse engine's ``schema_translate_map`` turns it into
``LMS_WAREHOUSE_SCHEMA`` on PostgreSQL and into no schema on SQLite. Temporary
staging tables carry no schema and are left alone by the translation.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES

SCHEMA_TOKEN = "lms_warehouse"
METADATA = sa.MetaData(schema=SCHEMA_TOKEN)

TS = sa.DateTime(timezone=True)
#: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _now() -> sa.ColumnElement:
    return sa.func.current_timestamp()


#: ``Column.info`` key: when migration adds the column to a table holding rows, fill it from this column.
FILL_FROM = "fill_from"


def _classification_columns() -> list[sa.Column]:
    """What ``lms_activity_events`` made of a staged row: which version it processed, and whether it refused it."""
    return [
        sa.Column(
            "_classified_version",
            TS,
            info={FILL_FROM: "updated_at"},  # rows staged before this column existed were classified then
            comment="updated_at of the version lms_activity_events last processed; NULL or older: not classified yet",
        ),
        sa.Column(
            "_rejected_reason",
            sa.Text,
            comment="Why lms_activity_events rejected that version (e.g. an unknown exam); NULL: accepted",
        ),
    ]


def not_in_events(table: sa.Table) -> sa.ColumnElement[bool]:
    """Staged rows whose current version has not reached ``lms_activity_events``: not classified yet
    (the events step has not run or failed) or rejected there."""
    return sa.or_(
        table.c._classified_version.is_(None),
        table.c._classified_version != table.c.updated_at,
        table.c._rejected_reason.is_not(None),
    )


lms_activity_events = sa.Table(
    "lms_activity_events",
    METADATA,
    sa.Column("event_id", ID, primary_key=True, autoincrement=True, comment="Surrogate id, stable across reprocessing"),
    sa.Column(
        "event_key",
        sa.Text,
        nullable=False,
        unique=True,
        comment="exam:<Attempts.id>:<type> or content:<ContentAttempts.id>:<type>",
    ),
    sa.Column(
        "event_type",
        sa.Text,
        nullable=False,
        comment="exam_started, exam_completed, exam_passed, exam_failed, content_started, content_watched or content_completed",
    ),
    sa.Column("student_id", sa.BigInteger, nullable=False, comment="LMS Users.id of the student"),
    sa.Column("student_username", sa.Text, comment="LMS username of the student"),
    sa.Column("mentor_id", sa.BigInteger, comment="Student's active mentor at event time (first by id)"),
    sa.Column("mentor_username", sa.Text, comment="That mentor's LMS username"),
    sa.Column("activity_id", sa.BigInteger, comment="Exams.id or Contents.id"),
    sa.Column("activity_title", sa.Text, comment="Exam or content title"),
    sa.Column("course_id", sa.BigInteger, comment="Courses.id"),
    sa.Column("course_title", sa.Text, comment="Course title"),
    sa.Column(
        "activity_metadata",
        JSON,
        comment="JSON. Exams: score, max_score, pass_score, percentage, attempt_number, time_spent_seconds, status, student_name; content: content_type, progress_percent, time_spent_seconds, duration_seconds, status, student_name",
    ),
    sa.Column("timestamp", TS, nullable=False, comment="When the event happened (UTC)"),
    sa.Column("created_at", TS, nullable=False, server_default=_now(), comment="First stored"),
    sa.Column("updated_at", TS, nullable=False, server_default=_now(), comment="Last (re)computed"),
    sa.Column(
        "processed_for_ai",
        sa.Boolean,
        nullable=False,
        server_default=sa.false(),
        comment="True once an AI job marked it (api.mark_processed); reprocessing never resets it",
    ),
    sa.Column("zulip_user_id", sa.BigInteger, comment="Mentor's Zulip user id, once resolved"),
    sa.Column("ai_claimed_by", sa.Text, comment="Worker that last claimed the event via claim_unprocessed_events"),
    sa.Column("ai_claim_expires_at", TS, comment="End of that claim's lease; afterwards another worker may claim it"),
    sa.Index("ix_lms_activity_events_student_id", "student_id"),
    sa.Index("ix_lms_activity_events_event_type", "event_type"),
    sa.Index("ix_lms_activity_events_timestamp", "timestamp"),
    sa.Index("ix_lms_activity_events_processed_for_ai", "processed_for_ai"),
    sa.Index("ix_lms_activity_events_student_time", "student_id", "timestamp"),
    comment="One row per classified LMS activity event",
)

lms_event_log = sa.Table(
    "lms_event_log",
    METADATA,
    sa.Column("id", ID, primary_key=True, autoincrement=True, comment="Surrogate id"),
    sa.Column("event_id", sa.BigInteger, nullable=False, comment="lms_activity_events.event_id"),
    sa.Column("mentor_id", sa.BigInteger, nullable=False, comment="LMS Users.id of the mentor notified"),
    sa.Column(
        "status",
        sa.Text,
        nullable=False,
        server_default="pending",
        comment="pending | sent | failed | skipped | dry_run",
    ),
    sa.Column(
        "notification_sent",
        sa.Boolean,
        nullable=False,
        server_default=sa.false(),
        comment="True once Zulip accepted the message",
    ),
    sa.Column("notification_message_id", sa.BigInteger, comment="Zulip message id"),
    sa.Column("error_message", sa.Text, comment="Why the last attempt failed or was skipped"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0", comment="Send attempts so far"),
    sa.Column("created_at", TS, nullable=False, server_default=_now(), comment="When the notification was queued"),
    sa.Column("processed_at", TS, comment="When it was last attempted"),
    # Outbox bookkeeping (see warehouse/outbox.py): additive columns, NULL/false when idle.
    sa.Column("claimed_by", sa.Text, comment="Claim token (Dagster run id + suffix) of the run holding the pair"),
    sa.Column("claimed_at", TS, comment="When the pair was claimed"),
    sa.Column("sending_at", TS, comment="Set just before the Zulip request: the message may have gone out"),
    sa.Column(
        "delivery_uncertain",
        sa.Boolean,
        nullable=False,
        server_default=sa.false(),
        comment="failed with an unknown outcome (timeout, interrupted send): Zulip is asked before any resend",
    ),
    sa.Column("zulip_user_id", sa.BigInteger, comment="The mentor's Zulip user id the message went to"),
    sa.Column("delivery_attempted_at", TS, comment="When the last Zulip request carrying the pair went out"),
    sa.Column(
        "delivery_digest",
        sa.Text,
        comment="SHA-256 of that message's text: how a later run finds it on Zulip when the delivery was uncertain",
    ),
    sa.Column("last_run_id", sa.Text, comment="Dagster run that last processed the pair"),
    sa.UniqueConstraint("event_id", "mentor_id", name="uq_lms_event_log_event_mentor"),
    sa.Index("ix_lms_event_log_status", "status"),
    sa.Index("ix_lms_event_log_claimed_by", "claimed_by"),
    comment="Notification outbox and audit log: one row per (event, mentor)",
)

zulip_user_cache = sa.Table(
    "zulip_user_cache",
    METADATA,
    sa.Column("site", sa.Text, primary_key=True, comment="Zulip server URL the lookup was made on"),
    sa.Column("email", sa.Text, primary_key=True, comment="Mentor e-mail (lower case) as looked up"),
    sa.Column("found", sa.Boolean, nullable=False, comment="false: Zulip answered 'No such user'"),
    sa.Column("zulip_user_id", sa.BigInteger, comment="Zulip user id (NULL when not found)"),
    sa.Column("full_name", sa.Text, comment="Full name on Zulip"),
    sa.Column("is_active", sa.Boolean, comment="false: deactivated on Zulip (skipped)"),
    sa.Column("is_bot", sa.Boolean, comment="true: a bot account (skipped)"),
    sa.Column("fetched_at", TS, nullable=False, comment="When Zulip was asked"),
    sa.Column("expires_at", TS, nullable=False, comment="Looked up again after this time"),
    comment="LMS mentor e-mail -> Zulip account, cached so each mentor is looked up once per expiry",
)

raw_exam_attempts = sa.Table(
    "raw_exam_attempts",
    METADATA,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False, comment="LMS Attempts.id"),
    sa.Column("user_id", sa.BigInteger, nullable=False, comment="Attempts.user_id: the student"),
    sa.Column("exam_id", sa.BigInteger, nullable=False, comment="Attempts.exam_id"),
    sa.Column("status", sa.Text, nullable=False, comment="in_progress | submitted | graded | abandoned"),
    sa.Column("started_at", TS, nullable=False, comment="Attempts.started_at (UTC)"),
    sa.Column("submitted_at", TS, comment="Attempts.submitted_at (UTC)"),
    sa.Column("graded_at", TS, comment="Attempts.graded_at (UTC)"),
    sa.Column("score", sa.Float, comment="Attempts.score, once graded"),
    sa.Column("updated_at", TS, nullable=False, comment="Attempts.updated_at: last change in the LMS"),
    sa.Column("_extracted_at", TS, nullable=False, comment="When the pipeline copied the row"),
    *_classification_columns(),
    sa.Index("ix_raw_exam_attempts_updated_at", "updated_at"),
    comment="Staged copy of LMS Attempts rows",
)

raw_content_attempts = sa.Table(
    "raw_content_attempts",
    METADATA,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False, comment="LMS ContentAttempts.id"),
    sa.Column("user_id", sa.BigInteger, nullable=False, comment="ContentAttempts.user_id: the student"),
    sa.Column("content_id", sa.BigInteger, nullable=False, comment="ContentAttempts.content_id"),
    sa.Column("status", sa.Text, nullable=False, comment="started | in_progress | completed"),
    sa.Column("progress_percent", sa.Float, nullable=False, comment="0..100"),
    sa.Column("time_spent_seconds", sa.BigInteger, nullable=False, comment="Time spent on the content so far"),
    sa.Column("started_at", TS, nullable=False, comment="ContentAttempts.started_at (UTC)"),
    sa.Column("completed_at", TS, comment="ContentAttempts.completed_at (UTC)"),
    sa.Column("updated_at", TS, nullable=False, comment="ContentAttempts.updated_at: last change in the LMS"),
    sa.Column("_extracted_at", TS, nullable=False, comment="When the pipeline copied the row"),
    *_classification_columns(),
    sa.Index("ix_raw_content_attempts_updated_at", "updated_at"),
    comment="Staged copy of LMS ContentAttempts rows",
)

for _staged in (raw_exam_attempts, raw_content_attempts):
    # Only the rows not in lms_activity_events (normally none): --stats finds the oldest without a scan.
    sa.Index(
        f"ix_{_staged.name}_not_in_events",
        _staged.c.updated_at,
        postgresql_where=not_in_events(_staged),
        sqlite_where=not_in_events(_staged),
    )

lms_monitor_state = sa.Table(
    "lms_monitor_state",
    METADATA,
    sa.Column(
        "name",
        sa.Text,
        primary_key=True,
        comment="Which poller: 'lms_activity_sensor' (the sensor and lms-activity monitor share it)",
    ),
    sa.Column(
        "cursor",
        sa.Text,
        comment="Poll cursor (JSON): per attempts table the updated_at high-water mark, lookback digest and rows from the future; _pending: the ingest runs requested and followed until they succeed",
    ),
    sa.Column("last_poll_at", TS, comment="When the last poll saved this state"),
    sa.Column("last_run_id", sa.Text, comment="Run key (dagster/run_key) of the last ingest run the poll requested"),
    sa.Column(
        "last_run_status", sa.Text, comment="What the last poll did: the runs it requested, or why it requested none"
    ),
    comment="The LMS poll's state: one cursor for the Dagster sensor and lms-activity monitor",
)

ai_ready_events = sa.Table(
    "ai_ready_events",
    METADATA,
    sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False, comment="lms_activity_events.event_id"),
    sa.Column("event_key", sa.Text, nullable=False, comment="lms_activity_events.event_key"),
    sa.Column("student_id", sa.BigInteger, nullable=False, comment="LMS Users.id of the student"),
    sa.Column("event_type", sa.Text, nullable=False, comment="As in lms_activity_events"),
    sa.Column("timestamp", TS, nullable=False, comment="When the event happened (UTC)"),
    sa.Column("course_id", sa.BigInteger, comment="Courses.id"),
    sa.Column("activity_id", sa.BigInteger, comment="Exams.id for exam_* events, Contents.id for content_* events"),
    sa.Column("score_pct", sa.Float, comment="Score as % of max_score; exam_passed/exam_failed only"),
    sa.Column("passed", sa.Boolean, comment="True for exam_passed, false for exam_failed, NULL otherwise"),
    sa.Column("attempt_number", sa.Integer, comment="1-based attempt at this exam by this student; exam_* only"),
    sa.Column(
        "prior_failures",
        sa.Integer,
        comment="exam_failed events of this student on this exam before this event; exam_* only",
    ),
    sa.Column(
        "time_spent_seconds",
        sa.BigInteger,
        comment="Exams: seconds from start to submission; content: time spent as recorded. NULL on *_started events (not known yet)",
    ),
    sa.Column("progress_pct", sa.Float, comment="Content progress 0..100; content_watched/content_completed only"),
    sa.Column(
        "seconds_since_prev_event", sa.Float, comment="Seconds since this student's previous event; NULL for the first"
    ),
    sa.Column(
        "student_events_7d", sa.Integer, nullable=False, comment="This student's events in the 7 days before this event"
    ),
    sa.Column("hour_of_day", sa.Integer, nullable=False, comment="0..23, in LMS_TIMEZONE"),
    sa.Column("day_of_week", sa.Integer, nullable=False, comment="0 = Monday .. 6 = Sunday, in LMS_TIMEZONE"),
    sa.Column(
        "processed_for_ai",
        sa.Boolean,
        nullable=False,
        server_default=sa.false(),
        comment="Mirror of lms_activity_events.processed_for_ai",
    ),
    sa.Column("updated_at", TS, nullable=False, server_default=_now(), comment="Last (re)computed"),
    sa.Index("ix_ai_ready_events_student_time", "student_id", "timestamp"),
    sa.Index("ix_ai_ready_events_timestamp", "timestamp"),
    comment="One row per event with model-ready features (no look-ahead: only what was known at the event time)",
)

#: Per-type count columns of ``student_daily_activity``: ``<event_type>_count``.
DAILY_COUNT_COLUMNS = {event_type: f"{event_type}_count" for event_type in ALL_EVENT_TYPES}

student_daily_activity = sa.Table(
    "student_daily_activity",
    METADATA,
    sa.Column(
        "student_id", sa.BigInteger, primary_key=True, autoincrement=False, comment="LMS Users.id of the student"
    ),
    sa.Column("day", sa.Date, primary_key=True, comment="Calendar day in LMS_TIMEZONE"),
    sa.Column("student_username", sa.Text, comment="LMS username of the student"),
    sa.Column("events_total", sa.Integer, nullable=False, comment="Events of the student that day"),
    *[
        sa.Column(column, sa.Integer, nullable=False, comment=f"{event_type} events that day")
        for event_type, column in DAILY_COUNT_COLUMNS.items()
    ],
    sa.Column("exams_passed", sa.Integer, nullable=False, comment="Distinct exams passed that day"),
    sa.Column("exams_failed", sa.Integer, nullable=False, comment="Distinct exams failed that day"),
    sa.Column("mean_score_pct", sa.Float, comment="Mean score_pct of the day's exam_passed/exam_failed events"),
    sa.Column("content_minutes", sa.Float, nullable=False, comment="Minutes spent on content completed that day"),
    sa.Column("first_event_at", TS, nullable=False, comment="First event of the day (UTC)"),
    sa.Column("last_event_at", TS, nullable=False, comment="Last event of the day (UTC)"),
    sa.Column("updated_at", TS, nullable=False, server_default=_now(), comment="Last (re)computed"),
    sa.Index("ix_student_daily_activity_day", "day"),
    comment="One row per (student, day in LMS_TIMEZONE) with activity counts",
)


# --- integration service (lms-activity serve): API tokens and the webhook inbox ---------------------------

lms_service_tokens = sa.Table(
    "lms_service_tokens",
    METADATA,
    sa.Column("name", sa.Text, primary_key=True, comment="Token name given to lms-activity token create"),
    sa.Column("token_id", sa.Text, nullable=False, unique=True, comment="Public part of the token: finds the row"),
    sa.Column("scope", sa.Text, nullable=False, comment="read | write (write includes read)"),
    sa.Column("salt", sa.Text, nullable=False, comment="Random salt (hex) of the hash"),
    sa.Column("secret_hash", sa.Text, nullable=False, comment="SHA-256 (hex) of salt + the token's secret part"),
    sa.Column("created_at", TS, nullable=False, comment="When the token was created"),
    sa.Column("revoked_at", TS, comment="When it was revoked (NULL: valid)"),
    comment="Bearer tokens of the REST API and dashboard, stored salted and hashed (the token is shown once)",
)

lms_webhook_inbox = sa.Table(
    "lms_webhook_inbox",
    METADATA,
    sa.Column("webhook_id", sa.Text, primary_key=True, comment="The webhook-id header: a repeat is recorded once"),
    sa.Column("source", sa.Text, nullable=False, comment="attempts | content_attempts (the LMS table announced)"),
    sa.Column("row_id", sa.BigInteger, nullable=False, comment="Id of the announced LMS row"),
    sa.Column("received_at", TS, nullable=False, comment="When the webhook was received"),
    sa.Column("consumed_at", TS, comment="When a poll handed the row to an ingest run (NULL: not yet)"),
    sa.Column("run_key", sa.Text, comment="Run key of that ingest run (none: the row was already ingested)"),
    sa.Index(
        "ix_lms_webhook_inbox_pending",
        "received_at",
        postgresql_where=sa.text("consumed_at IS NULL"),
        sqlite_where=sa.text("consumed_at IS NULL"),
    ),
    comment="LMS webhooks received by lms-activity serve; the next poll ingests the announced rows",
)


# --- mentor notification preferences (issue 12) -----------------------------------------------------

mentor_notification_preferences = sa.Table(
    "mentor_notification_preferences",
    METADATA,
    sa.Column("mentor_id", sa.BigInteger, primary_key=True, autoincrement=False, comment="LMS Users.id of the mentor"),
    sa.Column(
        "scope_kind",
        sa.Text,
        primary_key=True,
        comment="all | course | student: what the preference covers; the most specific one wins",
    ),
    sa.Column(
        "scope_id",
        sa.BigInteger,
        primary_key=True,
        autoincrement=False,
        comment="Courses.id (course) or Users.id of the student (student); 0 for all",
    ),
    sa.Column("frequency", sa.Text, nullable=False, comment="immediate | hourly | daily | weekly | off"),
    sa.Column("send_hour", sa.Integer, nullable=False, comment="0..23, local hour of daily and weekly digests"),
    sa.Column("weekday", sa.Text, nullable=False, comment="mon..sun, day of weekly digests"),
    sa.Column("timezone", sa.Text, comment="IANA time zone of the mentor; NULL: LMS_TIMEZONE"),
    sa.Column("quiet_start", sa.Text, comment="HH:MM local: quiet hours start (only urgent messages then); NULL: none"),
    sa.Column(
        "quiet_end", sa.Text, comment="HH:MM local: quiet hours end (may be before quiet_start: across midnight)"
    ),
    sa.Column("snooze_until", sa.Date, comment="Nothing but urgent messages before this local date; NULL: not snoozed"),
    sa.Column("updated_at", TS, nullable=False, server_default=_now(), comment="Last set"),
    comment="Mentor notification preferences, one row per mentor and scope (lms-activity prefs)",
)

mentor_digest_state = sa.Table(
    "mentor_digest_state",
    METADATA,
    sa.Column("mentor_id", sa.BigInteger, primary_key=True, autoincrement=False, comment="LMS Users.id of the mentor"),
    sa.Column(
        "last_digest_at",
        TS,
        comment="When a notify run last claimed a scheduled (hourly/daily/weekly) digest for the mentor",
    ),
    comment="When each mentor's last scheduled digest went out (what makes the next one due)",
)


def table_named(name: str) -> sa.Table:
    """The warehouse table called ``name`` (e.g. ``"lms_activity_events"``)."""
    return METADATA.tables[f"{SCHEMA_TOKEN}.{name}"]


# --- operational alerts (issue 15) --------------------------------------------------------------

lms_alert_incidents = sa.Table(
    "lms_alert_incidents",
    METADATA,
    sa.Column(
        "key",
        sa.Text,
        primary_key=True,
        comment="Dedup key of the incident, e.g. 'backlog', 'run_failed:lms_ingest_job:2024-05-03' (one row per key)",
    ),
    sa.Column("status", sa.Text, nullable=False, comment="open | resolved"),
    sa.Column("title", sa.Text, nullable=False, comment="The alert's title as sent"),
    sa.Column("detail", sa.Text, comment="The alert's detail line when it (last) opened"),
    sa.Column("opened_at", TS, nullable=False, comment="When the incident (last) opened"),
    sa.Column("last_seen_at", TS, nullable=False, comment="When a check last saw it"),
    sa.Column(
        "notified_at",
        TS,
        comment="When the 'opened' message was sent; NULL: not yet (hourly cap, Zulip down, or alerts to run logs only)",
    ),
    sa.Column("resolved_at", TS, comment="When the incident cleared; NULL while open"),
    sa.Column("resolve_notified_at", TS, comment="When the 'resolved' message was sent"),
    sa.Column("last_error", sa.Text, comment="Why the last message for it could not be sent"),
    sa.Index("ix_lms_alert_incidents_status", "status"),
    comment="Operational alert incidents: one row per dedup key, so alerts are sent once across restarts and processes",
)

#: The health checks' probe: has a mentor had a DM delivered since their first failure?
ix_lms_event_log_mentor_status = sa.Index(
    "ix_lms_event_log_mentor_status", lms_event_log.c.mentor_id, lms_event_log.c.status, lms_event_log.c.processed_at
)

# --- students at risk (student_risk, risk_feedback, risk_digest_log) ----------------------------------

student_risk = sa.Table(
    "student_risk",
    METADATA,
    sa.Column(
        "student_id", sa.BigInteger, primary_key=True, autoincrement=False, comment="LMS Users.id of the student"
    ),
    sa.Column("course_id", sa.BigInteger, primary_key=True, autoincrement=False, comment="LMS Courses.id"),
    sa.Column(
        "as_of", sa.Date, primary_key=True, comment="The partition day (LMS_TIMEZONE): only events before its end"
    ),
    sa.Column("risk_level", sa.Text, nullable=False, comment="high, medium or low"),
    sa.Column(
        "risk_score", sa.Float, nullable=False, comment="0..1: 1 - product of (1 - weight) over the reasons that hold"
    ),
    sa.Column(
        "reasons",
        JSON,
        nullable=False,
        comment="JSON list of {code, detail, value, threshold}; codes: inactive, failed_in_row, unpassed_exam, "
        "stalled_content, declining_scores",
    ),
    sa.Column("model", sa.Text, nullable=False, comment="What produced the row: rules-<version> or learned-<version>"),
    sa.Column("student_username", sa.Text, comment="LMS username of the student"),
    sa.Column("course_title", sa.Text, comment="Course title as the events of the 60 days record it"),
    sa.Column("mentor_id", sa.BigInteger, comment="Student's mentor at their latest event in the course"),
    sa.Column(
        "last_event_at", TS, nullable=False, comment="Latest event of the student in the course before as_of ends"
    ),
    sa.Column("days_inactive", sa.Float, nullable=False, comment="Days from last_event_at to the end of as_of"),
    sa.Column("unpassed_exams", sa.Integer, nullable=False, comment="Exams of the course failed and never passed"),
    sa.Column("failed_in_row", sa.Integer, nullable=False, comment="Longest current run of failures on one exam"),
    sa.Column(
        "stalled_contents",
        sa.Integer,
        nullable=False,
        comment="Videos/audio started at least 7 days before and not watched or completed",
    ),
    sa.Column(
        "declining_scores", sa.Boolean, nullable=False, comment="The last three graded results in the course fall"
    ),
    sa.Column(
        "streak_days", sa.Integer, nullable=False, comment="Consecutive days with activity in the course up to as_of"
    ),
    sa.Column(
        "on_track", sa.Boolean, nullable=False, comment="Low risk and a streak of at least 3 days: the good news"
    ),
    sa.Column("updated_at", TS, nullable=False, server_default=_now(), comment="Last (re)computed"),
    sa.Index("ix_student_risk_as_of_level", "as_of", "risk_level"),
    comment="One row per (student, course, day) for students active in the course in the 60 days before: "
    "at-risk level, score and reasons",
)

risk_digest_log = sa.Table(
    "risk_digest_log",
    METADATA,
    sa.Column("mentor_id", sa.BigInteger, primary_key=True, autoincrement=False, comment="LMS Users.id of the mentor"),
    sa.Column(
        "student_id", sa.BigInteger, primary_key=True, autoincrement=False, comment="LMS Users.id of the student"
    ),
    sa.Column("course_id", sa.BigInteger, primary_key=True, autoincrement=False, comment="LMS Courses.id"),
    sa.Column("as_of", sa.Date, primary_key=True, comment="The student_risk day told"),
    sa.Column("risk_level", sa.Text, nullable=False, comment="What was told: high, medium, or resolved"),
    sa.Column(
        "is_new", sa.Boolean, nullable=False, comment="Not flagged in the mentor's previous digest of the course"
    ),
    sa.Column("status", sa.Text, nullable=False, comment="pending, sending, sent, failed or dry_run"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0", comment="Send attempts"),
    sa.Column("message_id", sa.BigInteger, comment="Zulip id of the digest message that told it"),
    sa.Column("zulip_user_id", sa.BigInteger, comment="The mentor's Zulip user id"),
    sa.Column("content_digest", sa.Text, comment="SHA-256 of the digest text: how an uncertain send is found on Zulip"),
    sa.Column("error_message", sa.Text, comment="Why the last attempt failed"),
    sa.Column("enqueued_at", TS, nullable=False, server_default=_now(), comment="When the mentor was due"),
    sa.Column("attempted_at", TS, comment="When the last send started"),
    sa.Column("sent_at", TS, comment="When the digest went out (or was rendered, dry-run)"),
    sa.Index("ix_risk_digest_log_status", "status"),
    comment="The at-risk digest outbox: one row per (mentor, student, course, day) told, exactly once",
)

risk_feedback = sa.Table(
    "risk_feedback",
    METADATA,
    sa.Column("message_id", sa.BigInteger, primary_key=True, autoincrement=False, comment="Zulip id of the digest"),
    sa.Column("mentor_id", sa.BigInteger, primary_key=True, autoincrement=False, comment="LMS Users.id of the mentor"),
    sa.Column(
        "student_id", sa.BigInteger, primary_key=True, autoincrement=False, comment="A student the digest flagged"
    ),
    sa.Column("course_id", sa.BigInteger, primary_key=True, autoincrement=False, comment="The digest's course"),
    sa.Column("label", sa.Text, primary_key=True, comment="useful (👍) or wrongly_flagged (👎)"),
    sa.Column("as_of", sa.Date, nullable=False, comment="The student_risk day the digest told"),
    sa.Column("reacted_at", TS, nullable=False, comment="When the reaction was first read back from Zulip"),
    comment="Mentors' reactions to at-risk digests: labels for the learned model",
)

# --- learned at-risk model (issue 13, LMS_RISK_MODEL=learned) ---
risk_models = sa.Table(
    "risk_models",
    METADATA,
    sa.Column("version", sa.Text, primary_key=True, comment="Hash of the model's numbers: rows say learned-<version>"),
    sa.Column("trained_at", TS, nullable=False, comment="When it was fitted (the cut-off of its training data)"),
    sa.Column("features", JSON, nullable=False, comment="JSON list of the feature names, in order"),
    sa.Column(
        "params", JSON, nullable=False, comment="JSON: scaler mean/scale, coefficients, intercept, level thresholds"
    ),
    sa.Column("metrics", JSON, nullable=False, comment="JSON: validation precision, recall, PR-AUC, the rules' on it"),
    sa.Column("created_at", TS, nullable=False, server_default=_now(), comment="When it was stored"),
    comment="The learned at-risk model's versions: a day re-run with a version scores the same",
)
