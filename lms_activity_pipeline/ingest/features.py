"""Feature tables from ``lms_activity_events``: ``ai_ready_events`` and ``student_daily_activity``.

They read the warehouse, never the LMS, and always recompute their window: the window's rows become
exactly what the current events say, so reprocessing is idempotent.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from lms_activity_pipeline.domain import features as feat
from lms_activity_pipeline.ingest.reports import FeaturesReport
from lms_activity_pipeline.lms.queries import ExtractWindow
from lms_activity_pipeline.warehouse.features import FAR_FUTURE, STUDENT_CHUNK
from lms_activity_pipeline.warehouse.load import UpsertResult
from lms_activity_pipeline.warehouse.store import Warehouse

AI_PREVIEW_COLUMNS = [
    "event_key",
    "event_type",
    "timestamp",
    "attempt_number",
    "prior_failures",
    "score_pct",
    "seconds_since_prev_event",
    "student_events_7d",
]
DAILY_PREVIEW_COLUMNS = [
    "student_id",
    "day",
    "events_total",
    "exams_passed",
    "exams_failed",
    "mean_score_pct",
    "content_minutes",
]


def refresh_later_events(
    store: Warehouse, after: dt.datetime, students: set[int], timezone: str
) -> tuple[int, UpsertResult]:
    """Recompute the features of ``students``' events from ``after`` on (their history changed)."""
    ordered, total, written = sorted(students), 0, UpsertResult(0, 0, 0)
    for i in range(0, len(ordered), STUDENT_CHUNK):
        events, history = store.feature_inputs(after, FAR_FUTURE, ordered[i : i + STUDENT_CHUNK])
        later = feat.event_features(events, history, timezone)
        written += store.write_ai_ready_events(later, after, FAR_FUTURE, whole_window=False)
        total += len(later)
    return total, written


def compute_ai_ready_events(store: Warehouse, start: dt.datetime, end: dt.datetime, timezone: str) -> FeaturesReport:
    """Recompute ``ai_ready_events`` for ``[start, end)``; where the window's history changed, bring the
    later events of exactly those students up to date (they were computed from the window as it was)."""
    stored = store.stored_timeline(start, end)
    events, history = store.feature_inputs(start, end)
    features = feat.event_features(events, history, timezone)
    result = store.write_ai_ready_events(features, start, end)
    stale = set() if stored is None else feat.students_with_new_timelines(stored, features)
    refreshed, later = refresh_later_events(store, end, stale, timezone) if stale else (0, UpsertResult(0, 0, 0))
    return FeaturesReport(
        window=ExtractWindow(start, end),
        upserted=result,
        rows=features[AI_PREVIEW_COLUMNS] if not features.empty else features,
        students=int(events["student_id"].nunique()),
        lookback_events=len(history.recent),
        later_recomputed=refreshed,
        later_changed=later.updated,
        stale_students=len(stale),
    )


def compute_daily_activity(store: Warehouse, start: dt.datetime, end: dt.datetime, timezone: str) -> FeaturesReport:
    """Recompute ``student_daily_activity`` for the local days of ``[start, end)``."""
    zone = ZoneInfo(timezone)
    first_day, end_day = start.astimezone(zone).date(), end.astimezone(zone).date()
    daily = feat.daily_activity(store.window_events(start, end), timezone)
    result = store.write_daily_activity(daily, first_day, end_day)
    return FeaturesReport(
        window=ExtractWindow(start, end),
        upserted=result,
        rows=daily[DAILY_PREVIEW_COLUMNS] if not daily.empty else daily,
    )
