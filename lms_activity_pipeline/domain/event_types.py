"""The seven activity event types (docs/ingestion.md) and how their identity is spelled."""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    EXAM_STARTED = "exam_started"
    EXAM_COMPLETED = "exam_completed"
    EXAM_PASSED = "exam_passed"
    EXAM_FAILED = "exam_failed"
    CONTENT_STARTED = "content_started"
    CONTENT_WATCHED = "content_watched"
    CONTENT_COMPLETED = "content_completed"


ALL_EVENT_TYPES: tuple[str, ...] = tuple(t.value for t in EventType)
EXAM_EVENT_TYPES: tuple[str, ...] = ALL_EVENT_TYPES[:4]
CONTENT_EVENT_TYPES: tuple[str, ...] = ALL_EVENT_TYPES[4:]

#: Source-table prefix of ``event_key`` (``exam:<Attempts.id>:<type>``).
EXAM_KEY_PREFIX = "exam"
CONTENT_KEY_PREFIX = "content"


def event_key(source: str, row_id: int, event_type: str) -> str:
    """The identity of an event, e.g. ``exam:1042:exam_failed``."""
    return f"{source}:{row_id}:{event_type}"
