"""Pending (event, mentor) pairs -> per-mentor batches -> the messages that carry them.

Pure Python: no Dagster, no database, no Zulip client.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lms_activity_pipeline.domain.messages import (
    DIGEST_LIMIT,
    MessageExtras,
    render_digest_parts,
    render_event_message,
    render_message,
)
from lms_activity_pipeline.domain.notification_event import NotificationEvent
from lms_activity_pipeline.domain.outbox import PendingPair


@dataclass(frozen=True)
class MentorBatch:
    """The pairs of one mentor handled together (one message or one digest)."""

    mentor_id: int
    pairs: tuple[PendingPair, ...]

    @property
    def log_ids(self) -> list[int]:
        return [p.log_id for p in self.pairs]


@dataclass(frozen=True)
class PlannedMessage:
    """One Zulip message and the events it tells about."""

    content: str
    event_ids: tuple[int, ...]

    @property
    def is_digest(self) -> bool:
        return len(self.event_ids) > 1


def mentor_batches(pairs: Iterable[PendingPair]) -> list[MentorBatch]:
    """Group pairs by mentor, mentors in order of their oldest pair (lowest ``log_id``)."""
    ordered = sorted(pairs, key=lambda p: p.log_id)
    grouped: dict[int, list[PendingPair]] = {}
    for pair in ordered:
        grouped.setdefault(pair.mentor_id, []).append(pair)
    return [MentorBatch(mentor, tuple(items)) for mentor, items in grouped.items()]


def plan_messages(
    events: Sequence[NotificationEvent], *, limit: int = DIGEST_LIMIT, extras: MessageExtras | None = None
) -> list[PlannedMessage]:
    """One rich message for a single event; otherwise a digest, split into parts under ``limit``.

    ``extras`` (preferences and rules in force) mark urgent events, give a digest its period and add the
    footer telling the mentor how to change their frequency."""
    if not events:
        return []
    if len(events) == 1:
        text = render_event_message(events[0]) if extras is None else render_message(events[0], extras)
        return [PlannedMessage(text, (events[0].event_id,))]
    parts = render_digest_parts(events, limit=limit, extras=extras)
    return [PlannedMessage(part.text, part.event_ids) for part in parts]
