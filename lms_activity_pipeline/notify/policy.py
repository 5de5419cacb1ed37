"""What a notify run may send now: mentors' preferences and the notification rules applied to the waiting pairs.

:func:`decide` reads every takeable pair of a selection once (with what rules look at), the preferences
and the digest state, and sorts each pair into: due now (by mentor, oldest first), skipped (muted by
preference, a rule's ``notify: false``, or too old to send) or held until a time. Preferences are read
on every decision, so a change applies to pairs already waiting. Failed pairs being retried are always
due (they were due when first tried). No Dagster here.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from lms_activity_pipeline.domain import preferences as prefs
from lms_activity_pipeline.domain.outbox import OutboxStatus, PendingPair
from lms_activity_pipeline.domain.rules import EventFacts, Rule, RuleSet
from lms_activity_pipeline.domain.text import plural
from lms_activity_pipeline.warehouse.outbox import Outbox, Selection
from lms_activity_pipeline.warehouse.preferences import PreferenceStore


@dataclass(frozen=True)
class NotifyPolicy:
    """The default frequency (``LMS_NOTIFY_DEFAULT_FREQUENCY``), time zone (``LMS_TIMEZONE``) and rules."""

    default_frequency: str = prefs.Frequency.IMMEDIATE
    timezone: str = "UTC"
    rules: RuleSet = field(default_factory=RuleSet)

    def default_for(self, mentor_id: int) -> prefs.Preference:
        return prefs.Preference(mentor_id, frequency=self.default_frequency)

    def in_force(self, store: PreferenceStore) -> bool:
        """Whether anything may hold, skip or mark a pair (otherwise every pair is due as before)."""
        return bool(self.rules) or self.default_frequency != prefs.Frequency.IMMEDIATE or store.any()

    def describe(self) -> str:
        rules = "; ".join(self.rules.describe()) or "none"
        return f"default frequency {self.default_frequency}, time zone {self.timezone}; rules: {rules}"


@dataclass
class Decision:
    """Every takeable pair of a selection, sorted by what a run started at ``now`` does with it."""

    now: dt.datetime
    #: Due now, by mentor (mentors in the order of their oldest due pair).
    due: dict[int, list[PendingPair]] = field(default_factory=dict)
    #: Not sent, by reason (``muted by preference``, ``rule '…': notify: false``, too old).
    skipped: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    held: int = 0
    held_mentors: set[int] = field(default_factory=set)
    next_due_at: dt.datetime | None = None
    #: Mentors whose due pairs include a scheduled digest: the ``last_digest_at`` the decision saw.
    digest_expect: dict[int, dt.datetime | None] = field(default_factory=dict)
    #: Due pairs marked urgent by a rule.
    urgent: set[int] = field(default_factory=set)
    #: Where the period covered by a mentor's scheduled digest starts.
    period_start: dict[int, dt.datetime] = field(default_factory=dict)

    @property
    def takeable(self) -> int:
        return sum(len(p) for p in self.due.values()) + sum(len(ids) for ids in self.skipped.values())

    @property
    def takeable_mentors(self) -> int:
        return len(self.due)

    def describe_held(self) -> str:
        if not self.held:
            return ""
        when = f", the next due {self.next_due_at:%Y-%m-%d %H:%M} UTC" if self.next_due_at else ""
        return f"{plural(self.held, 'pair')} of {plural(len(self.held_mentors), 'mentor')} held by preferences{when}"


def decide(
    outbox: Outbox,
    policy: NotifyPolicy,
    selection: Selection,
    now: dt.datetime,
    *,
    too_old_before: dt.datetime | None = None,
    too_old_reason: str = "too old",
) -> Decision:
    """Sort the selection's takeable pairs (see :class:`Decision`). Pairs due under plain ``immediate``
    whose event happened before ``too_old_before`` are skipped as too old; held pairs never are."""
    store = PreferenceStore(outbox.engine)
    rows = outbox.waiting(selection, with_scores=policy.rules.needs_scores)
    failures = outbox.failures_in_row(selection) if policy.rules.needs_failures else {}
    by_mentor = prefs.index_by_mentor(store.all())
    last = store.last_digests()
    decision = Decision(now=now)
    due_cache: dict[tuple[int, prefs.Preference, bool], dt.datetime | None] = {}
    for row in rows:
        log_id, mentor_id = row.log_id, row.mentor_id
        if row.status != OutboxStatus.PENDING:  # a failed pair being retried: due as it was when first tried
            if too_old_before is not None and row.timestamp < too_old_before:
                decision.skipped[too_old_reason].append(log_id)
                continue
            decision.due.setdefault(mentor_id, []).append(PendingPair(log_id, row.event_id, mentor_id))
            continue
        rule: Rule | None = None
        if policy.rules:
            facts = EventFacts(
                row.event_type, row.course_id, row.activity_id, row.score_pct, failures.get(row.event_id, 0)
            )
            rule = policy.rules.match(facts)
            if rule is not None and not rule.notify:
                decision.skipped[rule.skip_reason].append(log_id)
                continue
        urgent = rule is not None and rule.urgent
        preference = prefs.resolve(
            by_mentor.get(mentor_id, ()), row.student_id, row.course_id, policy.default_for(mentor_id)
        )
        key = (mentor_id, preference, urgent)
        if key not in due_cache:
            due_cache[key] = prefs.due_at(preference, now, last.get(mentor_id), policy.timezone, urgent=urgent)
        when = due_cache[key]
        if when is None:
            decision.skipped[prefs.MUTED_REASON].append(log_id)
            continue
        if when > now:
            decision.held += 1
            decision.held_mentors.add(mentor_id)
            decision.next_due_at = when if decision.next_due_at is None else min(decision.next_due_at, when)
            continue
        holds = preference.holds and not urgent
        if not holds and too_old_before is not None and row.timestamp < too_old_before:
            decision.skipped[too_old_reason].append(log_id)
            continue
        decision.due.setdefault(mentor_id, []).append(PendingPair(log_id, row.event_id, mentor_id))
        if urgent:
            decision.urgent.add(log_id)
        elif preference.scheduled:
            decision.digest_expect[mentor_id] = last.get(mentor_id)
            start = last.get(mentor_id) or prefs.period_start(preference, now, policy.timezone)
            if start is not None:
                decision.period_start[mentor_id] = min(decision.period_start.get(mentor_id, start), start)
    decision.due = dict(sorted(decision.due.items(), key=lambda item: (item[1][0].log_id, item[0])))
    decision.skipped = dict(decision.skipped)
    return decision


def policy_from(default_frequency: str, timezone: str, rules: RuleSet | None) -> NotifyPolicy:
    return NotifyPolicy(default_frequency=default_frequency, timezone=timezone, rules=rules or RuleSet())


def as_metadata(decision: Decision) -> Mapping[str, object]:
    return {
        "held_by_preference": decision.held,
        "next_due_at": decision.next_due_at.isoformat() if decision.next_due_at else None,
    }
