"""The outbox worker: takes open (event, mentor) pairs, sends each mentor one message or a digest, records.

One run of :meth:`Notifier.run` drains what is due, within its time budget:

1. stale claims of dead runs are released (or failed as uncertain, if a send
   may have happened); uncertain deliveries old enough to tell are looked up
   on Zulip and settled (``sent`` as the message found, or a certain failure
   that this run may resend), page by page; open pairs whose event is now too
   old are ``skipped``;
2. mentors with takeable pairs are read a page at a time (oldest pair first,
   :data:`MENTOR_PAGE` mentors), with all their takeable pairs and their LMS
   contacts (before anything is claimed): memory is bounded by a page, and a
   mentor's pairs are never split between runs;
3. per mentor: claim the pairs, resolve the Zulip account, render, mark
   ``sending_at``, send with the retry policy (Zulip's 429 Retry-After, and
   its rate-limit headers to hold off before a 429), record ``sent``/``failed``/
   ``skipped`` (or ``dry_run`` without Zulip), pair by pair through the message
   that carried it. A mentor's failure never stops the others; after
   ``breaker_threshold`` mentors in a row fail on server or network errors (or
   bad credentials) the run stops, and once ``time_budget`` has passed it starts
   no new mentor: what is left is counted by :meth:`Outbox.backlog` and waits
   for the next run.

No Dagster here: the op in ``ops/notify.py`` wires resources in and turns the
:class:`NotifySummary` into metadata.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pandas as pd

from lms_activity_pipeline.domain.batches import MentorBatch, PlannedMessage, mentor_batches, plan_messages
from lms_activity_pipeline.domain.delivery import (
    Delivery,
    ReplyKind,
    RetryPolicy,
    call_with_retries,
    call_without_duplicates,
)
from lms_activity_pipeline.domain.messages import MessageExtras
from lms_activity_pipeline.domain.outbox import OutboxStatus
from lms_activity_pipeline.domain.recipients import MentorContact, ZulipAccount
from lms_activity_pipeline.domain.text import plural
from lms_activity_pipeline.notify.directory import MentorDirectory
from lms_activity_pipeline.notify.policy import Decision
from lms_activity_pipeline.notify.request import NotifyRequest
from lms_activity_pipeline.notify.zulip_gateway import ZulipGateway, content_digest
from lms_activity_pipeline.warehouse.outbox import (
    Backlog,
    DigestSlot,
    MentorKey,
    Outbox,
    Outcome,
    Selection,
    UncertainDelivery,
    UncertainKey,
)
from lms_activity_pipeline.warehouse.zulip_user_cache import ZulipUserCache

PREVIEW_MESSAGES = 10
#: A drain says how far it got every this many mentors.
PROGRESS_EVERY_MENTORS = 50
PREVIEW_CHARS = 300
#: Mentors read (with all their takeable pairs) per page.
MENTOR_PAGE = 200
#: Rows of uncertain delivery read per page.
SETTLE_PAGE = 500


@dataclass(frozen=True)
class ZulipSetup:
    """A gateway and how to use it (``None`` as a whole means dry-run)."""

    gateway: ZulipGateway
    policy: RetryPolicy
    user_ttl: dt.timedelta = dt.timedelta(hours=24)
    unknown_user_ttl: dt.timedelta = dt.timedelta(hours=1)


@dataclass
class NotifySummary:
    """What a run did, for logs and op metadata."""

    mode: str
    counts: Counter[str] = field(default_factory=Counter)
    mentors: int = 0
    messages: int = 0
    zulip_user_lookups: int = 0
    stale_released: int = 0
    stale_uncertain: int = 0
    #: Uncertain deliveries looked up on Zulip: found (now ``sent``), not there (resendable), no answer.
    uncertain_found: int = 0
    uncertain_not_delivered: int = 0
    uncertain_unresolved: int = 0
    #: What the run left open, by what it waits for (counted after the run).
    left: Backlog = field(default_factory=Backlog)
    settle_after: dt.timedelta | None = None
    #: Why the run stopped before everything due was done (time budget, breaker).
    stopped_early: str | None = None
    preview: list[dict[str, Any]] = field(default_factory=list)
    #: The preferences' defaults and the rules in force (``None``: none in force, every pair due at once).
    policy: str | None = None

    @property
    def open_after(self) -> int:
        return self.left.total

    def describe_left(self) -> str:
        return self.left.describe(self.settle_after)

    def describe(self) -> str:
        counts = ", ".join(
            f"{self.counts.get(s, 0)} {s}"
            for s in (OutboxStatus.SENT, OutboxStatus.SKIPPED, OutboxStatus.FAILED, OutboxStatus.DRY_RUN)
        )
        text = f"notifications ({self.mode}): {counts}; {self.messages} messages to {self.mentors} mentors"
        if self.uncertain_found or self.uncertain_not_delivered or self.uncertain_unresolved:
            text += (
                f"; uncertain deliveries: {self.uncertain_found} found on Zulip, "
                f"{self.uncertain_not_delivered} not delivered, {self.uncertain_unresolved} still unknown"
            )
        text += f"; {self.describe_left()}"
        return text + (f"; stopped early: {self.stopped_early}" if self.stopped_early else "")


MentorSource = Callable[[Collection[int]], pd.DataFrame]


class Notifier:
    """Sends what the outbox holds. ``zulip=None`` is dry-run; ``clock`` and ``sleep`` are injectable."""

    def __init__(
        self,
        outbox: Outbox,
        mentors: MentorSource,
        zulip: ZulipSetup | None,
        *,
        run_id: str,
        log: logging.Logger | Any,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.outbox = outbox
        self.mentors = mentors
        self.zulip = zulip
        self.run_id = run_id
        self.log = log
        self.clock = clock
        self.sleep = sleep
        self.directory: MentorDirectory | None = None
        if zulip is not None:
            self.directory = MentorDirectory(
                zulip.gateway,
                zulip.policy,
                cache=lambda site: ZulipUserCache(outbox.engine, site),
                ttl=zulip.user_ttl,
                unknown_ttl=zulip.unknown_user_ttl,
                clock=clock,
                sleep=sleep,
            )

    @property
    def mode(self) -> str:
        return "zulip" if self.zulip is not None else "dry_run"

    def run(self, request: NotifyRequest) -> NotifySummary:
        summary = NotifySummary(mode=self.mode, settle_after=request.settle_after)
        selection = request.selection
        now = self.clock()
        if not request.enabled:
            summary.mode = "disabled"
            summary.left = request.backlog(self.outbox, now)
            self.log.warning(
                f"Mentor notifications are disabled (LMS_NOTIFY_MENTORS_ENABLED=false): nothing sent, "
                f"{summary.open_after} pairs stay open in lms_event_log"
            )
            return summary

        deadline = now + request.time_budget
        if request.policy is not None:
            summary.policy = request.policy.describe()
        stale = self.outbox.recover_stale_claims(now - request.claim_timeout, now)
        summary.stale_released, summary.stale_uncertain = stale.released, stale.uncertain
        if stale.released or stale.uncertain:
            self.log.warning(
                f"stale claims of interrupted runs: {stale.released} released, "
                f"{stale.uncertain} failed as uncertain deliveries (Zulip is asked before any resend)"
            )
        if self.zulip is not None:
            self._settle_uncertain(request, now, deadline, summary)
        decision = request.decide(self.outbox, now)
        if decision is None:
            hours = request.max_age.total_seconds() / 3600
            too_old = self.outbox.skip_too_old(
                selection,
                now - request.max_age,
                now,
                self.run_id,
                f"event older than LMS_NOTIFY_MAX_AGE_HOURS={hours:g} when sending",
            )
            if too_old:
                summary.counts[OutboxStatus.SKIPPED] += too_old
                self.log.info(f"{too_old} pairs skipped: their event is older than {hours:g} h")
            self._send_due(request, deadline, summary)
        else:
            self._send_decided(request, decision, deadline, summary)

        if self.directory is not None:
            summary.zulip_user_lookups = self.directory.lookups
        summary.left = request.backlog(self.outbox, self.clock())
        if summary.stopped_early:
            self.log.warning(
                f"Stopped early: {summary.stopped_early}; left for the next run: {summary.describe_left()}"
            )
        self.log.info(summary.describe())
        return summary

    def _send_due(self, request: NotifyRequest, deadline: dt.datetime, summary: NotifySummary) -> None:
        """Every mentor with takeable pairs, a page at a time, until none is left, the budget is
        spent or the breaker trips. Each mentor is taken at most once per run."""
        selection = request.selection
        visited: set[int] = set()
        after: MentorKey | None = None
        failures_in_a_row = 0
        while page := self.outbox.due_mentors(selection, after, MENTOR_PAGE):
            after = page[-1]
            fresh = [key.mentor_id for key in page if key.mentor_id not in visited]
            batches = mentor_batches(self.outbox.takeable_pairs(selection, fresh))
            contacts = self._contacts([b.mentor_id for b in batches]) if batches else {}
            for batch in batches:
                if reason := self._stop_reason(request, failures_in_a_row, deadline, started=len(visited)):
                    summary.stopped_early = reason
                    return
                visited.add(batch.mentor_id)
                systemic = self._process(batch, contacts[batch.mentor_id], selection, summary)
                failures_in_a_row = failures_in_a_row + 1 if systemic else 0
                if len(visited) % PROGRESS_EVERY_MENTORS == 0:
                    self.log.info(f"progress: {plural(len(visited), 'mentor')} done, {summary.messages} messages")

    def _send_decided(
        self, request: NotifyRequest, decision: Decision, deadline: dt.datetime, summary: NotifySummary
    ) -> None:
        """What preferences and rules made due, mentor by mentor; what they skip is recorded first."""
        assert request.policy is not None
        selection = request.selection
        for why, ids in decision.skipped.items():
            skipped = self.outbox.skip(ids, selection, why, decision.now, self.run_id)
            summary.counts[OutboxStatus.SKIPPED] += skipped
            if skipped:
                self.log.info(f"{plural(skipped, 'pair')} skipped: {why}")
        if decision.held:
            self.log.info(decision.describe_held())
        mentors = list(decision.due.items())
        failures_in_a_row = 0
        for start in range(0, len(mentors), MENTOR_PAGE):
            page = mentors[start : start + MENTOR_PAGE]
            contacts = self._contacts([mentor_id for mentor_id, _ in page])
            for index, (mentor_id, pairs) in enumerate(page, start):
                if reason := self._stop_reason(request, failures_in_a_row, deadline, started=index):
                    summary.stopped_early = reason
                    return
                digest = (
                    DigestSlot(mentor_id, decision.digest_expect[mentor_id])
                    if mentor_id in decision.digest_expect
                    else None
                )
                extras = MessageExtras(
                    urgent=frozenset(p.log_id for p in pairs if p.log_id in decision.urgent),
                    since=decision.period_start.get(mentor_id),
                    timezone=request.policy.timezone,
                    footer=True,
                )
                batch = MentorBatch(mentor_id, tuple(pairs))
                systemic = self._process(batch, contacts[mentor_id], selection, summary, digest=digest, extras=extras)
                failures_in_a_row = failures_in_a_row + 1 if systemic else 0
                if (index + 1) % PROGRESS_EVERY_MENTORS == 0:
                    self.log.info(f"progress: {plural(index + 1, 'mentor')} done, {summary.messages} messages")

    def _stop_reason(
        self, request: NotifyRequest, failures_in_a_row: int, deadline: dt.datetime, started: int
    ) -> str | None:
        """Why no further mentor should be started (``None``: go on). The first mentor always starts."""
        if failures_in_a_row >= request.breaker_threshold:
            return f"{failures_in_a_row} mentors in a row failed on server, network or credential errors"
        if started and self.clock() >= deadline:
            minutes = request.time_budget.total_seconds() / 60
            return f"time budget of {minutes:g} min reached after {plural(started, 'mentor')}"
        return None

    # --- uncertain deliveries -----------------------------------------------------------

    def _settle_uncertain(
        self, request: NotifyRequest, now: dt.datetime, deadline: dt.datetime, summary: NotifySummary
    ) -> None:
        """Ask Zulip about each message of uncertain delivery, a page at a time; record what it says."""
        zulip = self.zulip
        assert zulip is not None
        after: UncertainKey | None = None
        while True:
            page, after = self.outbox.uncertain_deliveries(
                request.selection, now - request.settle_after, after, SETTLE_PAGE
            )
            if not page or not self._settle_page(zulip, page, deadline, summary):
                return

    def _settle_page(
        self, zulip: ZulipSetup, page: list[UncertainDelivery], deadline: dt.datetime, summary: NotifySummary
    ) -> bool:
        """Settle one page; False when the rest must wait (Zulip not answering, time budget spent)."""
        for index, item in enumerate(page):
            if self.clock() >= deadline:
                self.log.warning("time budget spent looking up uncertain deliveries; the rest waits for the next run")
                return False
            check = call_with_retries(partial(self._find, zulip, item), zulip.policy, self.sleep, zulip.gateway.pause)
            if not check.ok:
                if check.reply.is_systemic and check.reply.kind is not ReplyKind.UNCERTAIN:
                    left = sum(len(i.log_ids) for i in page[index:])
                    summary.uncertain_unresolved += left
                    self.log.warning(
                        f"could not look up uncertain deliveries on Zulip ({check.error}); {left} pairs wait"
                    )
                    return False
                summary.uncertain_unresolved += len(item.log_ids)
                self.log.warning(f"uncertain delivery to Zulip user {item.zulip_user_id} still unknown: {check.error}")
                continue
            message_id = check.reply.body.get("id")
            settled = self.outbox.settle(
                item.log_ids, None if message_id is None else int(message_id), self.clock(), self.run_id
            )
            if message_id is not None:
                summary.uncertain_found += settled
                summary.counts[OutboxStatus.SENT] += settled
                self.log.info(
                    f"uncertain delivery to Zulip user {item.zulip_user_id} had arrived as message {message_id}: "
                    f"{settled} pair(s) recorded sent"
                )
            else:
                summary.uncertain_not_delivered += settled
                self.log.info(
                    f"uncertain delivery to Zulip user {item.zulip_user_id} never arrived: {settled} pair(s) may be resent"
                )
        return True

    @staticmethod
    def _find(zulip: ZulipSetup, item: UncertainDelivery):
        return zulip.gateway.find_direct([item.zulip_user_id], item.digest, item.attempted_at.timestamp())

    # --- one mentor ------------------------------------------------------------------

    def _contacts(self, mentor_ids: list[int]) -> dict[int, MentorContact]:
        frame = self.mentors(mentor_ids)
        found: dict[int, MentorContact] = {}
        for row in frame.to_dict("records"):
            mentor_id = int(row["id"])
            found[mentor_id] = MentorContact(
                mentor_id=mentor_id,
                username=_text(row.get("username")),
                email=_text(row.get("email")),
                full_name=_text(row.get("full_name")),
                is_active=None if pd.isna(row.get("is_active")) else bool(row.get("is_active")),
            )
        return {m: found.get(m, MentorContact(mentor_id=m, in_lms=False)) for m in mentor_ids}

    def _process(
        self,
        batch: MentorBatch,
        contact: MentorContact,
        selection: Selection,
        summary: NotifySummary,
        *,
        digest: DigestSlot | None = None,
        extras: MessageExtras | None = None,
    ) -> bool:
        """Claim, send and record one mentor's pairs; True when they failed in a way every mentor would."""
        token = f"{self.run_id}:{uuid.uuid4().hex[:8]}"
        claimed = self.outbox.claim(batch.log_ids, selection, token, self.clock(), digest)
        if not claimed:
            return False  # another run took them
        job = _MentorJob(self, token, contact, claimed, summary, extras)
        summary.mentors += 1
        try:
            return job.run()
        except Exception as exc:
            self.log.exception(f"mentor {contact.label}: unexpected error, pairs recorded as failed")
            job.fail_remaining(f"internal error: {type(exc).__name__}: {exc}")
            return False
        except BaseException:  # the run is being terminated: give back what was not sent
            job.interrupted()
            raise


class _MentorJob:
    """The claimed pairs of one mentor, from claim to recorded outcome."""

    def __init__(
        self,
        notifier: Notifier,
        token: str,
        contact: MentorContact,
        claimed: list[int],
        summary: NotifySummary,
        extras: MessageExtras | None = None,
    ) -> None:
        self.extras = extras
        self.notifier = notifier
        self.token = token
        self.contact = contact
        self.open: set[int] = set(claimed)
        self.sending: set[int] = set()
        self.summary = summary

    # recording ----------------------------------------------------------------------
    def record(self, log_ids: Collection[int], outcome: Outcome) -> None:
        ids = sorted(set(log_ids) & self.open)
        written = self.notifier.outbox.record(ids, self.token, outcome, self.notifier.clock())
        self.summary.counts[outcome.status] += written
        self.open -= set(ids)
        self.sending -= set(ids)

    def outcome(self, status: str, **kw: Any) -> Outcome:
        return Outcome(status=status, run_id=self.notifier.run_id, **kw)

    def fail_remaining(self, error: str) -> None:
        sending, idle = self.open & self.sending, self.open - self.sending
        if sending:
            self.record(
                sending,
                self.outcome(OutboxStatus.FAILED, attempts=1, error=f"uncertain delivery: {error}", uncertain=True),
            )
        if idle:
            self.record(idle, self.outcome(OutboxStatus.FAILED, error=error))

    def interrupted(self) -> None:
        """The run stops mid-mentor: unsent pairs go back, an in-flight message becomes uncertain."""
        try:
            if self.open & self.sending:
                self.record(
                    self.open & self.sending,
                    self.outcome(
                        OutboxStatus.FAILED,
                        attempts=1,
                        error="uncertain delivery: the run was stopped while sending",
                        uncertain=True,
                    ),
                )
            self.release_remaining()
        except Exception:  # noqa: BLE001 - stale-claim recovery of the next run covers what this could not write
            self.notifier.log.warning(f"mentor {self.contact.label}: could not give back claims of a stopped run")

    def release_remaining(self) -> None:
        self.notifier.outbox.release(sorted(self.open), self.token)
        self.open.clear()

    # the work -------------------------------------------------------------------------
    def run(self) -> bool:
        events = self.notifier.outbox.events_for(self.open)
        vanished = self.open - set(events)
        if vanished:
            self.record(vanished, self.outcome(OutboxStatus.SKIPPED, error="event no longer in lms_activity_events"))
        if not events:
            return False
        log_of = {event.event_id: log_id for log_id, event in events.items()}
        ordered = sorted(events.values(), key=lambda e: (e.timestamp, e.event_id))
        if self.extras is None:
            messages = plan_messages(ordered, extras=MessageExtras(footer=True))
        else:
            urgent = frozenset(events[i].event_id for i in self.extras.urgent if i in events)
            messages = plan_messages(ordered, extras=dataclasses.replace(self.extras, urgent=urgent))

        if self.notifier.zulip is None:
            for message in messages:
                to = f"{self.contact.label} <{self.contact.email}>"
                self.notifier.log.debug(f"[dry-run] DM to mentor {to}:\n{message.content}")
                self.record([log_of[e] for e in message.event_ids], self.outcome(OutboxStatus.DRY_RUN))
                self.summary.messages += 1
                self._preview(message, OutboxStatus.DRY_RUN)
            return False

        if reason := self.contact.skip_reason:
            return self._skip_all(reason)
        assert self.notifier.directory is not None and self.contact.email is not None
        resolution = self.notifier.directory.resolve(self.contact.email)
        if resolution.account is None:
            return self._lookup_failed(resolution.failure)
        if reason := resolution.account.skip_reason:
            return self._skip_all(reason)
        account = resolution.account
        assert account.user_id is not None
        self.notifier.outbox.set_event_zulip_user(log_of.keys(), self.contact.mentor_id, account.user_id)

        for message in messages:
            trouble = self._send(message, account, [log_of[e] for e in message.event_ids])
            if trouble is not None:
                self.release_remaining()  # later parts were not attempted: they stay open
                return trouble
        return False

    def _send(self, message: PlannedMessage, account: ZulipAccount, log_ids: list[int]) -> bool | None:
        """Send one message; ``None`` to go on with the next part, else whether the failure is systemic."""
        zulip = self.notifier.zulip
        assert zulip is not None and account.user_id is not None
        digest = content_digest(message.content)
        marked = self.notifier.outbox.mark_sending(log_ids, self.token, self.notifier.clock(), digest, account.user_id)
        if marked < len(log_ids):
            self.notifier.log.warning(f"mentor {self.contact.label}: claim expired before sending; left to other runs")
            return False
        self.sending |= set(log_ids)
        to, started = [account.user_id], time.time()
        delivery = call_without_duplicates(
            lambda: zulip.gateway.send_direct(to, message.content),
            lambda: zulip.gateway.find_direct(to, digest, started),
            zulip.policy,
            self.notifier.sleep,
            zulip.gateway.pause,
        )
        common = {"attempts": delivery.attempts, "zulip_user_id": account.user_id}
        if delivery.ok:
            message_id = delivery.reply.body.get("id")
            self.record(
                log_ids,
                self.outcome(OutboxStatus.SENT, message_id=None if message_id is None else int(message_id), **common),
            )
            self.summary.messages += 1
            self._preview(message, OutboxStatus.SENT, account)
            self.notifier.log.debug(
                f"sent to mentor {self.contact.label} (Zulip user {account.user_id}): "
                f"{len(log_ids)} event(s), message {message_id}{_waits(delivery)}"
            )
            return None
        kind = delivery.reply.kind
        if kind is ReplyKind.REJECTED:
            again = self.notifier.directory.refresh(account.email) if self.notifier.directory else None
            if again is not None and again.account is not None and again.account.skip_reason:
                self.record(log_ids, self.outcome(OutboxStatus.SKIPPED, error=again.account.skip_reason, **common))
                self._preview(message, OutboxStatus.SKIPPED, account)
                return False
        uncertain = kind is ReplyKind.UNCERTAIN
        self.record(log_ids, self.outcome(OutboxStatus.FAILED, error=delivery.error, uncertain=uncertain, **common))
        self._preview(message, OutboxStatus.FAILED, account, delivery.error)
        self.notifier.log.error(f"mentor {self.contact.label}: {len(log_ids)} pair(s) failed: {delivery.error}")
        return delivery.reply.is_systemic

    def _skip_all(self, reason: str) -> bool:
        self.notifier.log.warning(f"skipped {len(self.open)} pair(s): {reason}")
        self.record(self.open, self.outcome(OutboxStatus.SKIPPED, error=reason))
        return False

    def _lookup_failed(self, failure: Delivery | None) -> bool:
        error = f"Zulip user lookup failed: {failure.error if failure else 'no reply'}"
        attempts = failure.attempts if failure else 1
        self.notifier.log.error(f"mentor {self.contact.label}: {error}")
        self.record(self.open, self.outcome(OutboxStatus.FAILED, error=error, attempts=attempts))
        return failure is not None and failure.reply.is_systemic

    def _preview(
        self, message: PlannedMessage, status: str, account: ZulipAccount | None = None, error: str | None = None
    ) -> None:
        if len(self.summary.preview) >= PREVIEW_MESSAGES:
            return
        text = message.content if len(message.content) <= PREVIEW_CHARS else message.content[: PREVIEW_CHARS - 1] + "…"
        self.summary.preview.append(
            {
                "mentor": self.contact.label,
                "zulip_user_id": account.user_id if account else None,
                "status": status,
                "events": len(message.event_ids),
                "message": error or text,
            }
        )


def _text(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    text = str(value).strip()
    return text or None


def _waits(delivery: Delivery) -> str:
    extra = []
    if delivery.attempts > 1:
        extra.append(f"{delivery.attempts} attempts")
    if delivery.rate_limit_waits:
        extra.append(f"{delivery.rate_limit_waits} rate-limit waits ({delivery.waited_seconds:.1f} s)")
    if delivery.paced_seconds:
        extra.append(f"held off {delivery.paced_seconds:.1f} s as Zulip's rate-limit headers asked")
    if recovered := delivery.reply.body.get("recovered"):
        extra.append(f'stored by Zulip despite "{recovered}", so not sent again')
    return f" ({', '.join(extra)})" if extra else ""
