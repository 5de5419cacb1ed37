"""Shared set-up of the service tests: settings for a backend, signed webhooks."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any

from standardwebhooks.webhooks import Webhook

from lms_activity_pipeline.settings import Settings, load_settings

SECRET = "whsec_" + base64.b64encode(b"lms-webhook-test-secret-0001").decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"lms-webhook-test-secret-0002").decode()


def service_settings(warehouse_url: str, lms_url: str, tmp: Any, **extra: str) -> Settings:
    env = {
        "LMS_HOME": str(tmp),
        "LMS_WAREHOUSE_URL": warehouse_url,
        "LMS_DATABASE_URL": lms_url,
        "LMS_WEBHOOK_SECRET": SECRET,
        **extra,
    }
    return load_settings(env)


def signed(
    body: dict[str, Any] | bytes,
    *,
    secret: str = SECRET,
    webhook_id: str | None = None,
    at: dt.datetime | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A body and the Standard Webhooks headers signing it."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    wid = webhook_id or f"msg_{uuid.uuid4().hex}"
    when = at or dt.datetime.now(dt.UTC)
    signature = Webhook(secret).sign(wid, when, data.decode())
    return data, {
        "webhook-id": wid,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def risk_row(student: int, day: str, level: str, score: float, reasons: list[dict[str, object]]) -> dict[str, object]:
    """A ``student_risk`` row of course 7 (mentor 10) for ``day``."""
    t0 = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    return {
        "student_id": student,
        "course_id": 7,
        "as_of": dt.date.fromisoformat(day),
        "risk_level": level,
        "risk_score": score,
        "reasons": reasons,
        "model": "rules-1",
        "student_username": f"student{student}",
        "course_title": "Algebra I",
        "mentor_id": 10,
        "last_event_at": t0,
        "days_inactive": 9.0,
        "unpassed_exams": 1,
        "failed_in_row": 0,
        "stalled_contents": 0,
        "declining_scores": False,
        "streak_days": 0,
        "on_track": False,
        "updated_at": t0,
    }
