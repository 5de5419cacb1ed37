"""What the outbox says about the notifications' health: the backlog's age, the dead letter, mentors whose
DMs keep failing and uncertain deliveries that cannot be settled (read by the alerts, the asset checks on
``lms_event_log`` and ``monitor --stats``).

The *dead letter* is the failed pairs no automatic run takes again: the attempt cap reached (Zulip kept
failing or rejecting them) or a delivery of unknown outcome that cannot be looked up on Zulip. Only
``lms-activity monitor --process-pending`` retries them, after the cause is fixed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lms_activity_pipeline.domain.alerts import HealthFacts
from lms_activity_pipeline.domain.outbox import OutboxStatus
from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.warehouse.outbox import DEFAULT_MAX_ATTEMPTS, Selection, checkable_uncertain
from lms_activity_pipeline.warehouse.schema import lms_event_log as log

#: A mentor's DMs "keep failing" from this many failed pairs with no DM delivered since the first of them.
MENTOR_FAILURES = 3
#: An uncertain delivery still unsettled after this long is reported (the lookups keep failing).
UNSETTLED_AFTER = dt.timedelta(hours=24)


@dataclass(frozen=True)
class FailingMentor:
    mentor_id: int
    failed_pairs: int
    last_error: str | None


@dataclass(frozen=True)
class OutboxHealth:
    pending: int
    #: When the oldest pending pair was queued (``None``: nothing pending).
    oldest_pending_at: dt.datetime | None
    dead_letter: int
    dead_letter_mentors: int
    #: Uncertain deliveries that cannot be settled: nothing to look up, or unsettled after :data:`UNSETTLED_AFTER`.
    unsettled_uncertain: int
    failing_mentors: tuple[FailingMentor, ...]

    def with_due(self, pending: int, since: dt.datetime | None) -> OutboxHealth:
        """This health with the backlog limited to pairs due now (``since``: when the first became due):
        pairs a mentor's preference holds back are waiting on purpose, not a backlog."""
        return dataclasses.replace(self, pending=pending, oldest_pending_at=since)

    def pending_minutes(self, now: dt.datetime) -> float:
        if self.oldest_pending_at is None:
            return 0.0
        return max((to_utc(now) - self.oldest_pending_at).total_seconds(), 0.0) / 60

    def facts(
        self,
        now: dt.datetime,
        lag_minutes: float | None = None,
        sensor_errors: Mapping[str, tuple[int, str]] | None = None,
    ) -> HealthFacts:
        """The alert checks' input: this outbox's health plus the lag and the sensors' errors."""
        return HealthFacts(
            pending=self.pending,
            pending_minutes=self.pending_minutes(now),
            unsettled_uncertain=self.unsettled_uncertain,
            failing_mentors=tuple((m.mentor_id, m.failed_pairs, m.last_error) for m in self.failing_mentors),
            lag_minutes=lag_minutes,
            sensor_errors=dict(sensor_errors or {}),
        )


def dead_letter() -> sa.ColumnElement[bool]:
    """Failed pairs that automatic runs will not take again (see the module docstring)."""
    automatic = Selection(max_attempts=DEFAULT_MAX_ATTEMPTS)
    return sa.and_(
        log.c.status == OutboxStatus.FAILED,
        log.c.claimed_by.is_(None),
        sa.not_(automatic.claimable()),
        sa.not_(checkable_uncertain()),
    )


def outbox_health(engine: Engine, now: dt.datetime) -> OutboxHealth:
    """The outbox's health at ``now``: a few aggregate queries, one connection."""
    now = to_utc(now)
    pending = sa.select(sa.func.count(), sa.func.min(log.c.created_at)).where(log.c.status == OutboxStatus.PENDING)
    dead = sa.select(sa.func.count(), sa.func.count(sa.distinct(log.c.mentor_id))).where(dead_letter())
    unsettled = (
        sa.select(sa.func.count())
        .select_from(log)
        .where(
            log.c.status == OutboxStatus.FAILED,
            log.c.delivery_uncertain.is_(sa.true()),
            sa.or_(sa.not_(checkable_uncertain()), log.c.delivery_attempted_at < now - UNSETTLED_AFTER),
        )
    )
    certain_failure = sa.and_(log.c.status == OutboxStatus.FAILED, log.c.delivery_uncertain.is_(sa.false()))
    # Mentors with enough certain failures (through the status index), then, per candidate, one probe of
    # ix_lms_event_log_mentor_status for a DM delivered since their first failure.
    candidates = (
        sa.select(log.c.mentor_id, sa.func.count().label("failed"), sa.func.min(log.c.processed_at).label("first"))
        .where(certain_failure)
        .group_by(log.c.mentor_id)
        .having(sa.func.count() >= MENTOR_FAILURES)
        .subquery()
    )
    sent = log.alias("sent")
    delivered_since = (
        sa.select(sent.c.id)
        .where(
            sent.c.mentor_id == candidates.c.mentor_id,
            sent.c.status == OutboxStatus.SENT,
            sent.c.processed_at >= candidates.c.first,
        )
        .exists()
    )
    failing = (
        sa.select(candidates.c.mentor_id, candidates.c.failed)
        .where(sa.not_(delivered_since))
        .order_by(candidates.c.mentor_id)
    )
    with engine.connect() as conn:
        pending_count, oldest = conn.execute(pending).one()
        dead_count, dead_mentors = conn.execute(dead).one()
        unsettled_count = conn.execute(unsettled).scalar_one()
        mentors = []
        for mentor_id, failed in conn.execute(failing):
            error = conn.execute(
                sa.select(log.c.error_message)
                .where(log.c.mentor_id == mentor_id, certain_failure)
                .order_by(log.c.processed_at.desc().nulls_last(), log.c.id.desc())
                .limit(1)
            ).scalar()
            mentors.append(FailingMentor(int(mentor_id), int(failed), error))
    return OutboxHealth(
        pending=int(pending_count or 0),
        oldest_pending_at=to_utc(oldest),
        dead_letter=int(dead_count or 0),
        dead_letter_mentors=int(dead_mentors or 0),
        unsettled_uncertain=int(unsettled_count or 0),
        failing_mentors=tuple(mentors),
    )
