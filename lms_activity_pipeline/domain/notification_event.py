"""The view of a stored event that message formatting needs (no Dagster, no database)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NotificationEvent:
    """One row of ``lms_activity_events`` as the notifier sees it.

    ``metadata`` is ``activity_metadata``: for exams ``score``, ``max_score``,
    ``pass_score``, ``percentage``, ``attempt_number``; for content
    ``content_type``, ``progress_percent``, ``time_spent_seconds``,
    ``duration_seconds``; plus ``student_name`` (the LMS full name). Any key
    may be missing or ``None``.
    """

    event_id: int
    event_key: str
    event_type: str
    student_id: int
    student_username: str
    timestamp: dt.datetime
    activity_title: str | None = None
    course_title: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def student_name(self) -> str:
        return str(self.metadata.get("student_name") or self.student_username)
