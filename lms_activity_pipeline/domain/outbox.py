"""An (event, mentor) pair of the notification outbox (``lms_event_log``) and its statuses."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class OutboxStatus(StrEnum):
    PENDING = "pending"  # waiting to be sent (or held by a mentor's preference)
    SENT = "sent"  # delivered; the Zulip message id is recorded
    FAILED = "failed"  # not delivered, or (delivery_uncertain) perhaps delivered
    SKIPPED = "skipped"  # will not be sent; the reason is recorded
    DRY_RUN = "dry_run"  # rendered and logged, Zulip not configured

    @property
    def is_open(self) -> bool:
        """A pair in this status may still be sent."""
        return self in OPEN_STATUSES


#: Statuses a pair can still leave; the others are final.
OPEN_STATUSES: tuple[OutboxStatus, ...] = (OutboxStatus.PENDING, OutboxStatus.FAILED)
#: Every status, in the order reports list them.
STATUSES: tuple[OutboxStatus, ...] = tuple(OutboxStatus)


@dataclass(frozen=True)
class PendingPair:
    """One outbox row waiting to be sent: ``log_id`` is ``lms_event_log.id``."""

    log_id: int
    event_id: int
    mentor_id: int
