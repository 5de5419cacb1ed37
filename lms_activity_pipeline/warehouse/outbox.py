"""The notification outbox: ``lms_event_log`` rows from enqueue to their final status.

Life of a pair (``status``, with the claim columns in brackets)::

    enqueue ──► pending ──claim──► pending [claimed_by, claimed_at]
                  ▲                    │ mark_sending: [sending_at] (the request may go out now)
                  │ release            ▼
                  └──────────── record: sent | failed | skipped | dry_run  (claim cleared)

- ``sent``, ``skipped`` and ``dry_run`` are final. ``failed`` pairs are taken
  again by automatic runs while their delivery certainly failed and
  ``attempts`` is below the cap, and by ``lms-activity monitor
  --process-pending`` whatever their attempts.
- ``delivery_uncertain`` pairs (timeouts, interrupted sends) are never resent
  before Zulip has been asked: ``mark_sending`` keeps the request's time and a
  digest of its text (``delivery_attempted_at``, ``delivery_digest``), and
  :meth:`Outbox.settle` records what Zulip said (``sent`` with the message it
  found, or a certain failure that may be resent).
- Claims are atomic and whole per mentor: on PostgreSQL a claim first takes a
  transaction-scoped advisory lock per mentor (``pg_try_advisory_xact_lock``;
  a run that cannot get it leaves that mentor to the run that has it, so two
  runs never split one mentor's pairs into two messages), then one ``UPDATE
  ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)``; on SQLite the same
  single-statement write transaction (one writer at a time).
- A claim older than the claim timeout belongs to a run that died: without
  ``sending_at`` it is released (nothing was sent); with it the pair becomes
  ``failed`` + ``delivery_uncertain`` instead of being silently re-sent.
- :meth:`Outbox.backlog` is the one definition of what is open and what a run
  would do about it now (:attr:`Backlog.due`): pairs to take, stale claims to
  recover, uncertain deliveries old enough to look up on Zulip. Whatever decides
  whether to start a notification run asks it.

Every statement is set-based; each method is one short transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lms_activity_pipeline import db
from lms_activity_pipeline.domain.notification_event import NotificationEvent
from lms_activity_pipeline.domain.outbox import OPEN_STATUSES, STATUSES, OutboxStatus, PendingPair
from lms_activity_pipeline.domain.text import plural
from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.warehouse.preferences import take_digest_slot
from lms_activity_pipeline.warehouse.schema import lms_activity_events, lms_event_log

#: Automatic runs stop retrying a failed pair after this many send attempts.
DEFAULT_MAX_ATTEMPTS = 6

log = lms_event_log
events = lms_activity_events


@dataclass(frozen=True)
class Selection:
    """Which pairs a run may take.

    ``event_types``: only these types (empty: all). ``retry_all_failed``: every
    failed pair, uncertain ones and those over ``max_attempts`` included (what
    ``--process-pending`` does); otherwise failed pairs only while their delivery
    certainly failed and ``attempts < max_attempts`` (0: no cap).
    """

    event_types: tuple[str, ...] = ()
    retry_all_failed: bool = False
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    def of_types(self) -> list[sa.ColumnElement[bool]]:
        if not self.event_types:
            return []
        return [log.c.event_id.in_(sa.select(events.c.event_id).where(events.c.event_type.in_(self.event_types)))]

    def claimable(self) -> sa.ColumnElement[bool]:
        failed = log.c.status == OutboxStatus.FAILED
        if not self.retry_all_failed:
            failed = sa.and_(failed, log.c.delivery_uncertain.is_(sa.false()))
            if self.max_attempts > 0:
                failed = sa.and_(failed, log.c.attempts < self.max_attempts)
        else:
            # Uncertain deliveries that Zulip can be asked about are settled, never resent blindly.
            failed = sa.and_(failed, sa.not_(checkable_uncertain()))
        return sa.and_(
            log.c.claimed_by.is_(None), sa.or_(log.c.status == OutboxStatus.PENDING, failed), *self.of_types()
        )


def checkable_uncertain() -> sa.ColumnElement[bool]:
    """Failed with an unknown outcome, and we know what to look for on Zulip."""
    return sa.and_(
        log.c.delivery_uncertain.is_(sa.true()),
        log.c.delivery_digest.is_not(None),
        log.c.zulip_user_id.is_not(None),
    )


#: Ids per statement when writing by id.
_ID_CHUNK = 5000


@dataclass(frozen=True)
class DigestSlot:
    """A claim that sends a scheduled digest: the mentor's ``last_digest_at`` its decision saw."""

    mentor_id: int
    expected: dt.datetime | None


class MentorKey(NamedTuple):
    """Where a mentor stands in the queue: its oldest takeable pair, then its id."""

    first_id: int
    mentor_id: int


class UncertainKey(NamedTuple):
    """Where a row stands among uncertain deliveries: its request's time, then its id."""

    attempted_at: dt.datetime
    log_id: int


@dataclass(frozen=True)
class UncertainDelivery:
    """One message whose delivery is unknown: the pairs it carried and how to find it on Zulip."""

    log_ids: tuple[int, ...]
    zulip_user_id: int
    digest: str
    attempted_at: dt.datetime


@dataclass(frozen=True)
class Outcome:
    """What happened to some pairs: the values written when they are recorded."""

    status: str
    run_id: str | None
    attempts: int = 0
    message_id: int | None = None
    error: str | None = None
    uncertain: bool = False
    zulip_user_id: int | None = None


@dataclass(frozen=True)
class StaleClaims:
    released: int
    uncertain: int


@dataclass(frozen=True)
class Backlog:
    """The open (``pending``/``failed``) pairs of a selection, by what they wait for."""

    #: A run takes them now: pending, or failed with a certain failure (below the attempt cap).
    takeable: int = 0
    takeable_mentors: int = 0
    #: Claimed by a run that stopped (claim older than the claim timeout): the next run recovers them.
    stale_claims: int = 0
    #: Claimed by a run in progress.
    claimed: int = 0
    #: Uncertain deliveries old enough to be looked up on Zulip (the next run does).
    uncertain_due: int = 0
    #: Uncertain deliveries too recent to look up yet (the request may still be finishing on the server).
    uncertain_waiting: int = 0
    #: Failed and not retried automatically (attempt cap reached, or uncertain and not checkable): --process-pending.
    held: int = 0
    #: Pending pairs a mentor's preference holds back (frequency, quiet hours, snooze), and when the first is due.
    held_by_preference: int = 0
    next_due_at: dt.datetime | None = None

    @property
    def due(self) -> bool:
        """Would a notification run started now do anything with these pairs?"""
        return bool(self.takeable or self.stale_claims or self.uncertain_due)

    @property
    def total(self) -> int:
        return (
            self.takeable
            + self.stale_claims
            + self.claimed
            + self.uncertain_due
            + self.uncertain_waiting
            + self.held
            + self.held_by_preference
        )

    def describe(self, settle_after: dt.timedelta | None = None) -> str:
        """``0 pairs still open``, or the total and what each part waits for."""
        if not self.total:
            return "0 pairs still open"
        after = "" if settle_after is None else f" once {_duration(settle_after)} old"
        parts = [
            (self.takeable, f"{self.takeable} to send to {plural(self.takeable_mentors, 'mentor')}"),
            (self.stale_claims, f"{self.stale_claims} claimed by a run that stopped (the next run recovers them)"),
            (self.claimed, f"{self.claimed} claimed by a run in progress"),
            (self.uncertain_due, f"{self.uncertain_due} of uncertain delivery to look up on Zulip (the next run does)"),
            (self.uncertain_waiting, f"{self.uncertain_waiting} of uncertain delivery, looked up on Zulip{after}"),
            (self.held, f"{self.held} failed for good (only --process-pending retries them)"),
            (self.held_by_preference, f"{self.held_by_preference} held by mentors' preferences{self._next_due()}"),
        ]
        return f"{plural(self.total, 'pair')} still open: " + "; ".join(text for n, text in parts if n)

    def _next_due(self) -> str:
        return f" (the next due at {self.next_due_at:%Y-%m-%d %H:%M} UTC)" if self.next_due_at else ""


def _duration(value: dt.timedelta) -> str:
    seconds = value.total_seconds()
    return f"{seconds / 60:g} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} s"


#: First key of the advisory locks that serialise claims per mentor ("lmsA" as an int4).
_CLAIM_LOCK_SPACE = 0x6C6D7341


def try_lock_mentors(conn: sa.Connection, log_ids: Sequence[int]) -> bool:
    """Try to take, for this transaction, the claim lock of every mentor of ``log_ids`` (PostgreSQL)."""
    mentors = sa.select(log.c.mentor_id).where(log.c.id.in_(log_ids)).distinct().subquery()
    key = sa.cast(mentors.c.mentor_id % 2147483647, sa.Integer)
    got = conn.execute(sa.select(sa.func.bool_and(sa.func.pg_try_advisory_xact_lock(_CLAIM_LOCK_SPACE, key)))).scalar()
    return got is not False


class Outbox:
    """``lms_event_log`` as an outbox, on a warehouse engine (schema translation included)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- enqueue (ingest) ------------------------------------------------------

    def enqueue(self, pairs: pd.DataFrame) -> int:
        """Insert ``pending`` rows for ``event_key, mentor_id`` pairs; existing pairs are left alone.

        Events are found by ``event_key`` (they must be stored already). Returns
        the number of rows inserted: reprocessing a partition inserts none.
        """
        if pairs.empty:
            return 0
        stage = db.temp_table(
            "_stage_outbox_pairs", [sa.Column("event_key", sa.Text), sa.Column("mentor_id", sa.BigInteger)]
        )
        with db.write_transaction(self.engine) as conn:
            stage.drop(conn, checkfirst=True)
            stage.create(conn)
            db.bulk_insert(conn, stage, pairs[["event_key", "mentor_id"]])
            source = (
                sa.select(events.c.event_id, stage.c.mentor_id)
                .select_from(stage.join(events, events.c.event_key == stage.c.event_key))
                .where(sa.true())  # keeps SQLite from reading ON CONFLICT as part of the join
            )
            insert = db.insert(conn, log)
            stmt = insert.from_select(["event_id", "mentor_id"], source).on_conflict_do_nothing(
                index_elements=["event_id", "mentor_id"]
            )
            inserted = conn.execute(stmt).rowcount
            stage.drop(conn)
        return max(inserted or 0, 0)

    # --- housekeeping before a run -------------------------------------------------

    def recover_stale_claims(self, cutoff: dt.datetime, now: dt.datetime) -> StaleClaims:
        """Claims taken before ``cutoff`` belong to dead runs: release them, or fail them as uncertain."""
        stale = sa.and_(
            log.c.claimed_by.is_not(None), log.c.claimed_at < to_utc(cutoff), log.c.status.in_(OPEN_STATUSES)
        )
        with db.write_transaction(self.engine) as conn:
            uncertain = conn.execute(
                log.update()
                .where(stale, log.c.sending_at.is_not(None))
                .values(
                    status=OutboxStatus.FAILED,
                    delivery_uncertain=True,
                    error_message=sa.literal("uncertain delivery: the run holding claim ")
                    + log.c.claimed_by
                    + sa.case(
                        (
                            log.c.delivery_digest.is_not(None),
                            sa.literal(" stopped while sending; Zulip is asked before any resend"),
                        ),
                        else_=sa.literal(" stopped while sending; not resent automatically"),
                    ),
                    attempts=log.c.attempts + 1,
                    processed_at=to_utc(now),
                    claimed_by=None,
                    claimed_at=None,
                    sending_at=None,
                )
            ).rowcount
            released = conn.execute(
                log.update().where(stale, log.c.sending_at.is_(None)).values(claimed_by=None, claimed_at=None)
            ).rowcount
        return StaleClaims(released=released, uncertain=uncertain)

    def skip_too_old(
        self, selection: Selection, cutoff: dt.datetime, now: dt.datetime, run_id: str | None, reason: str
    ) -> int:
        """Mark takeable pairs whose event happened before ``cutoff`` as ``skipped``."""
        old = sa.select(events.c.event_id).where(events.c.timestamp < to_utc(cutoff))
        with db.write_transaction(self.engine) as conn:
            return conn.execute(
                log.update()
                .where(selection.claimable(), log.c.event_id.in_(old))
                .values(status=OutboxStatus.SKIPPED, error_message=reason, processed_at=to_utc(now), last_run_id=run_id)
            ).rowcount

    # --- reading ---------------------------------------------------------------

    def due_mentors(self, selection: Selection, after: MentorKey | None, limit: int) -> list[MentorKey]:
        """A page of mentors with takeable pairs, by their oldest takeable pair (keyset after ``after``).

        Paging ends: a mentor handled meanwhile has no takeable pair left, or
        its oldest one (failed, same id) is behind ``after``.
        """
        first = sa.func.min(log.c.id).label("first_id")
        mentors = sa.select(first, log.c.mentor_id).where(selection.claimable()).group_by(log.c.mentor_id).subquery()
        stmt = sa.select(mentors.c.first_id, mentors.c.mentor_id)
        if after is not None:
            stmt = stmt.where(
                sa.tuple_(mentors.c.first_id, mentors.c.mentor_id)
                > sa.tuple_(sa.literal(after.first_id), sa.literal(after.mentor_id))
            )
        stmt = stmt.order_by(mentors.c.first_id, mentors.c.mentor_id).limit(limit)
        with self.engine.connect() as conn:
            return [MentorKey(int(r.first_id), int(r.mentor_id)) for r in conn.execute(stmt)]

    def takeable_pairs(self, selection: Selection, mentor_ids: Collection[int]) -> list[PendingPair]:
        """Every takeable pair of these mentors, oldest first (not locked: :meth:`claim` decides)."""
        if not mentor_ids:
            return []
        stmt = (
            sa.select(log.c.id, log.c.event_id, log.c.mentor_id)
            .where(selection.claimable(), log.c.mentor_id.in_(sorted(mentor_ids)))
            .order_by(log.c.id)
        )
        with self.engine.connect() as conn:
            return [PendingPair(int(r.id), int(r.event_id), int(r.mentor_id)) for r in conn.execute(stmt)]

    def backlog(
        self, selection: Selection, now: dt.datetime, claim_timeout: dt.timedelta, settle_after: dt.timedelta
    ) -> Backlog:
        """The open pairs of ``selection`` by what they wait for, as a run started at ``now`` would see them."""
        stale = log.c.claimed_at < to_utc(now - claim_timeout)
        settleable = log.c.delivery_attempted_at < to_utc(now - settle_after)
        kind = sa.case(
            (sa.and_(log.c.claimed_by.is_not(None), stale), "stale_claims"),
            (log.c.claimed_by.is_not(None), "claimed"),
            (selection.claimable(), "takeable"),
            (sa.and_(checkable_uncertain(), settleable), "uncertain_due"),
            (checkable_uncertain(), "uncertain_waiting"),
            else_="held",
        ).label("kind")
        open_pairs = (
            sa.select(kind, log.c.mentor_id).where(log.c.status.in_(OPEN_STATUSES), *selection.of_types()).subquery()
        )
        stmt = sa.select(
            open_pairs.c.kind, sa.func.count(), sa.func.count(sa.distinct(open_pairs.c.mentor_id))
        ).group_by(open_pairs.c.kind)
        with self.engine.connect() as conn:
            rows = {r[0]: (int(r[1]), int(r[2])) for r in conn.execute(stmt)}
        counts: dict[str, Any] = {name: pairs for name, (pairs, _) in rows.items()}
        return Backlog(**counts, takeable_mentors=rows.get("takeable", (0, 0))[1])

    def waiting(
        self, selection: Selection, *, rule_facts: bool = False, old_before: dt.datetime | None = None
    ) -> pd.DataFrame:
        """Every takeable pair of ``selection`` with what preferences and rules look at, oldest first:
        ``log_id, event_id, mentor_id, pending, created_at, student_id, course_id, old`` (its event happened
        before ``old_before``), with ``rule_facts`` also ``event_type, activity_id, score_pct``. One query."""
        old = (
            sa.case((events.c.timestamp < to_utc(old_before), True), else_=False)
            if old_before is not None
            else sa.false()
        )
        columns: list[sa.ColumnElement] = [
            log.c.id.label("log_id"),
            log.c.event_id,
            log.c.mentor_id,
            sa.case((log.c.status == OutboxStatus.PENDING, True), else_=False).label("pending"),
            log.c.created_at,
            events.c.student_id,
            events.c.course_id,
            sa.cast(old, sa.Boolean).label("old"),
        ]
        if rule_facts:
            columns += [
                events.c.event_type,
                events.c.activity_id,
                events.c.activity_metadata["percentage"].as_float().label("score_pct"),
            ]
        stmt = (
            sa.select(*columns)
            .select_from(log.join(events, events.c.event_id == log.c.event_id))
            .where(selection.claimable())
            .order_by(log.c.id)
        )
        with self.engine.connect() as conn:
            result = conn.execute(stmt)
            rows = result.cursor.fetchall() if result.cursor is not None else []  # plain values, no Row objects
            result.close()
        return pd.DataFrame.from_records(rows, columns=[c.name for c in stmt.selected_columns])

    def failures_in_row(self, selection: Selection) -> dict[int, int]:
        """For each takeable ``exam_failed`` pair's event: the consecutive failed attempts of that exam by
        the student up to it (this one included), from the stored exam outcomes."""
        waiting = (
            sa.select(events.c.student_id, events.c.activity_id)
            .select_from(log.join(events, events.c.event_id == log.c.event_id))
            .where(selection.claimable(), events.c.event_type == "exam_failed")
            .distinct()
            .subquery()
        )
        history = (
            sa.select(events.c.event_id, events.c.student_id, events.c.activity_id, events.c.event_type)
            .select_from(
                events.join(
                    waiting,
                    sa.and_(events.c.student_id == waiting.c.student_id, events.c.activity_id == waiting.c.activity_id),
                )
            )
            .where(events.c.event_type.in_(["exam_passed", "exam_failed"]))
            .order_by(events.c.student_id, events.c.activity_id, events.c.timestamp, events.c.event_id)
        )
        found: dict[int, int] = {}
        streak, current = 0, None
        with self.engine.connect() as conn:
            for r in conn.execute(history):
                if (r.student_id, r.activity_id) != current:
                    current, streak = (r.student_id, r.activity_id), 0
                streak = streak + 1 if r.event_type == "exam_failed" else 0
                found[int(r.event_id)] = streak
        return found

    def skip(
        self, log_ids: Sequence[int], selection: Selection, reason: str, now: dt.datetime, run_id: str | None
    ) -> int:
        """Mark those of ``log_ids`` still takeable as ``skipped`` with ``reason``."""
        done, ids = 0, sorted(log_ids)
        for start in range(0, len(ids), _ID_CHUNK):
            with db.write_transaction(self.engine) as conn:
                done += conn.execute(
                    log.update()
                    .where(log.c.id.in_(ids[start : start + _ID_CHUNK]), selection.claimable())
                    .values(
                        status=OutboxStatus.SKIPPED, error_message=reason, processed_at=to_utc(now), last_run_id=run_id
                    )
                ).rowcount
        return done

    def events_for(self, log_ids: Collection[int]) -> dict[int, NotificationEvent]:
        """The stored events of the given pairs, by ``lms_event_log.id``."""
        if not log_ids:
            return {}
        stmt = (
            sa.select(
                log.c.id.label("log_id"),
                events.c.event_id,
                events.c.event_key,
                events.c.event_type,
                events.c.student_id,
                events.c.student_username,
                events.c.timestamp,
                events.c.activity_title,
                events.c.course_title,
                events.c.activity_metadata,
            )
            .select_from(log.join(events, events.c.event_id == log.c.event_id))
            .where(log.c.id.in_(sorted(log_ids)))
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return {
            int(r.log_id): NotificationEvent(
                event_id=int(r.event_id),
                event_key=r.event_key,
                event_type=r.event_type,
                student_id=int(r.student_id),
                student_username=r.student_username or "",
                timestamp=to_utc(r.timestamp),
                activity_title=r.activity_title,
                course_title=r.course_title,
                metadata=r.activity_metadata if isinstance(r.activity_metadata, dict) else {},
            )
            for r in rows
        }

    # --- claiming and recording -----------------------------------------------------

    def claim(
        self,
        log_ids: Sequence[int],
        selection: Selection,
        token: str,
        now: dt.datetime,
        digest: DigestSlot | None = None,
    ) -> list[int]:
        """Atomically claim those of ``log_ids`` still takeable; returns the ids this claim got.

        With ``digest``, the mentor's ``last_digest_at`` is compare-and-set in the same transaction: if
        another run sent a digest since the decision, nothing is claimed (never two digests for one slot).
        """
        if not log_ids:
            return []
        ids = sorted(log_ids)
        # Both statements are driven by the primary key (``id IN ids``), whatever the planner's statistics.
        takeable = sa.select(log.c.id).where(log.c.id.in_(ids), selection.claimable())
        with db.write_transaction(self.engine) as conn:  # SQLite: BEGIN IMMEDIATE, one claimer at a time
            if db.is_postgres(conn):
                if not try_lock_mentors(conn, ids):
                    return []  # another run is claiming these mentors right now: it takes them whole
                takeable = takeable.with_for_update(skip_locked=True)
            got = sorted(int(i) for i in conn.execute(takeable).scalars())  # locked (PostgreSQL) until commit
            if got and digest is not None and not take_digest_slot(conn, digest.mentor_id, digest.expected, now):
                return []  # another run sent this mentor's digest since our decision: it is not due any more
            if got:
                conn.execute(
                    log.update()
                    .where(log.c.id.in_(got))
                    .values(claimed_by=token, claimed_at=to_utc(now), sending_at=None)
                )
            return got

    def mark_sending(
        self,
        log_ids: Sequence[int],
        token: str,
        now: dt.datetime,
        digest: str | None = None,
        zulip_user_id: int | None = None,
    ) -> int:
        """Note that a request for these pairs is about to go out; returns how many are still ours.

        Keeps the request's time and ``digest`` (of the message text) for a later
        look-up on Zulip, and renews the whole claim of ``token`` (a run waiting
        out rate limits is alive, not stale).
        """
        if not log_ids:
            return 0
        ids, at = sorted(log_ids), to_utc(now)
        values: dict[str, object] = {
            "claimed_at": at,
            "sending_at": at,
            "delivery_attempted_at": at,
            "delivery_digest": digest,
        }
        if zulip_user_id is not None:
            values["zulip_user_id"] = zulip_user_id
        with db.write_transaction(self.engine) as conn:
            marked = conn.execute(
                log.update().where(log.c.id.in_(ids), log.c.claimed_by == token).values(**values)
            ).rowcount
            conn.execute(log.update().where(log.c.claimed_by == token, log.c.id.not_in(ids)).values(claimed_at=at))
            return marked

    # --- uncertain deliveries ----------------------------------------------------------

    def uncertain_deliveries(
        self, selection: Selection, attempted_before: dt.datetime, after: UncertainKey | None, limit: int
    ) -> tuple[list[UncertainDelivery], UncertainKey | None]:
        """A page of at most ``limit`` rows of uncertain delivery sent before ``attempted_before``,
        oldest first after ``after``, grouped into the messages that carried them; and the page's
        last key (``None`` when the page is empty). Rows settled meanwhile drop out; rows Zulip
        could not tell about stay behind the key, so paging always ends."""
        stmt = (
            sa.select(log.c.id, log.c.zulip_user_id, log.c.delivery_digest, log.c.delivery_attempted_at)
            .where(
                log.c.status == OutboxStatus.FAILED,
                log.c.claimed_by.is_(None),
                checkable_uncertain(),
                log.c.delivery_attempted_at < to_utc(attempted_before),
                *selection.of_types(),
            )
            .order_by(log.c.delivery_attempted_at, log.c.id)
            .limit(limit)
        )
        if after is not None:
            stmt = stmt.where(
                sa.tuple_(log.c.delivery_attempted_at, log.c.id)
                > sa.tuple_(
                    sa.literal(to_utc(after.attempted_at), sa.DateTime(timezone=True)), sa.literal(after.log_id)
                )
            )
        groups: dict[tuple[int, str], list[tuple[int, dt.datetime]]] = {}
        last: UncertainKey | None = None
        with self.engine.connect() as conn:
            for row in conn.execute(stmt):
                at = to_utc(row.delivery_attempted_at)
                groups.setdefault((int(row.zulip_user_id), row.delivery_digest), []).append((int(row.id), at))
                last = UncertainKey(at, int(row.id))
        deliveries = [
            UncertainDelivery(tuple(i for i, _ in rows), user, digest, min(t for _, t in rows))
            for (user, digest), rows in groups.items()
        ]
        return deliveries, last

    def settle(self, log_ids: Sequence[int], message_id: int | None, now: dt.datetime, run_id: str | None) -> int:
        """Record what Zulip said about uncertain pairs: ``sent`` as ``message_id``, or (None) not delivered.

        Not delivered leaves them ``failed`` with a certain outcome, so they may be sent again.
        """
        if not log_ids:
            return 0
        values: dict[str, object] = {"delivery_uncertain": False, "processed_at": to_utc(now), "last_run_id": run_id}
        if message_id is not None:
            values.update(
                status=OutboxStatus.SENT, notification_sent=True, notification_message_id=message_id, error_message=None
            )
        else:
            values["error_message"] = sa.literal(
                "not delivered (Zulip has no such message) after: "
            ) + sa.func.coalesce(log.c.error_message, "")
        with db.write_transaction(self.engine) as conn:
            return conn.execute(
                log.update()
                .where(
                    log.c.id.in_(sorted(log_ids)),
                    log.c.status == OutboxStatus.FAILED,
                    log.c.delivery_uncertain.is_(sa.true()),
                    log.c.claimed_by.is_(None),
                )
                .values(**values)
            ).rowcount

    def record(self, log_ids: Sequence[int], token: str, outcome: Outcome, now: dt.datetime) -> int:
        """Write an outcome and clear the claim. Final statuses are never overwritten.

        Rows whose claim expired meanwhile (``claimed_by`` NULL) are written too:
        what really happened beats what stale-claim recovery guessed.
        """
        if not log_ids:
            return 0
        values: dict[str, object] = {
            "status": outcome.status,
            "error_message": outcome.error,
            "attempts": log.c.attempts + outcome.attempts,
            "processed_at": to_utc(now),
            "delivery_uncertain": outcome.uncertain,
            "last_run_id": outcome.run_id,
            "claimed_by": None,
            "claimed_at": None,
            "sending_at": None,
        }
        if outcome.status == OutboxStatus.SENT:
            values.update(notification_sent=True, notification_message_id=outcome.message_id)
        if outcome.zulip_user_id is not None:
            values["zulip_user_id"] = outcome.zulip_user_id
        with db.write_transaction(self.engine) as conn:
            return conn.execute(
                log.update()
                .where(
                    log.c.id.in_(sorted(log_ids)),
                    log.c.status.in_(OPEN_STATUSES),
                    sa.or_(log.c.claimed_by == token, log.c.claimed_by.is_(None)),
                )
                .values(**values)
            ).rowcount

    def release(self, log_ids: Sequence[int], token: str) -> int:
        """Give pairs back untouched (nothing was sent for them)."""
        if not log_ids:
            return 0
        with db.write_transaction(self.engine) as conn:
            return conn.execute(
                log.update()
                .where(log.c.id.in_(sorted(log_ids)), log.c.claimed_by == token)
                .values(claimed_by=None, claimed_at=None, sending_at=None)
            ).rowcount

    def set_event_zulip_user(self, event_ids: Collection[int], mentor_id: int, zulip_user_id: int) -> int:
        """Fill ``lms_activity_events.zulip_user_id`` where ``mentor_id`` is the event's (primary) mentor."""
        if not event_ids:
            return 0
        with db.write_transaction(self.engine) as conn:
            return conn.execute(
                events.update()
                .where(
                    events.c.event_id.in_(sorted(event_ids)),
                    events.c.mentor_id == mentor_id,
                    events.c.zulip_user_id.is_distinct_from(zulip_user_id),
                )
                .values(zulip_user_id=zulip_user_id)
            ).rowcount

    def status_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            found = {
                str(s): int(n) for s, n in conn.execute(sa.select(log.c.status, sa.func.count()).group_by(log.c.status))
            }
        return {s.value: found.get(s.value, 0) for s in STATUSES}
