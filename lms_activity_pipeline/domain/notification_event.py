"""The view of a stored event that message formatting needs (no Dagster, no database)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lms_activity_pipeline.domain.text import has_visible_text


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
        """The LMS full name; the username when the name shows nothing (empty, only invisible or
        control characters); ``student <id>`` when the username shows nothing either."""
        for candidate in (self.metadata.get("student_name"), self.student_username):
            if has_visible_text(candidate):
                return str(candidate)
        return f"student {self.student_id}"
