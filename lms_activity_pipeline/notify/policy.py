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

import numpy as np
import pandas as pd

from lms_activity_pipeline.domain import preferences as prefs
from lms_activity_pipeline.domain.outbox import PendingPair
from lms_activity_pipeline.domain.rules import Rule, RuleSet
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
    #: Pending pairs due now, and the earliest time one of them became due (its preference released it).
    due_pending: int = 0
    due_since: dt.datetime | None = None

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
    (and failed pairs being retried) whose event happened before ``too_old_before`` are skipped as too
    old; held pairs never are.

    Set-based: one read of the pairs, the preferences resolved by joins (student > course > all), the
    rules applied column-wise in order, and the due-time arithmetic done once per distinct preference
    (:func:`~lms_activity_pipeline.domain.preferences.schedule`), then per mentor's last digest.
    """
    store = PreferenceStore(outbox.engine)
    decision = Decision(now=now)
    frame = outbox.waiting(selection, rule_facts=bool(policy.rules), old_before=too_old_before)
    if frame.empty:
        decision.skipped = {}
        return decision
    frame = frame.reset_index(drop=True)
    n = len(frame)
    log_ids = frame["log_id"].to_numpy(dtype="int64")
    event_ids = frame["event_id"].to_numpy(dtype="int64")
    mentors = frame["mentor_id"].to_numpy(dtype="int64")
    pending = frame["pending"].fillna(False).to_numpy(dtype=bool)

    # rules: the first matching rule of each pending pair (-1: none)
    rule_of = np.full(n, -1)
    if policy.rules:
        failures = outbox.failures_in_row(selection) if policy.rules.needs_failures else {}
        facts = _facts(frame, failures)
        for index, rule in enumerate(policy.rules.rules):
            free = (rule_of == -1) & pending
            if free.any():
                rule_of[free & _matches(rule, facts)] = index
    urgent = np.array([r.urgent for r in policy.rules.rules] + [False])[rule_of] & pending
    muted_by_rule = ~np.array([r.notify for r in policy.rules.rules] + [True])[rule_of] & pending

    # preferences: each pair's most specific one, and the schedule of each distinct setting
    table = store.frame()
    pref_of = _resolve(frame, table)
    settings = ["frequency", "send_hour", "weekday", "timezone", "quiet_start", "quiet_end", "snooze_until"]
    if table.empty:
        setting_of_pref = np.zeros(0, dtype="int64")
        distinct = table
    else:
        # fields a frequency does not use do not make settings distinct (fewer schedules to compute)
        normal = table[settings].astype(object).fillna("")
        normal.loc[normal["frequency"] != prefs.Frequency.WEEKLY, "weekday"] = ""
        dated = normal["frequency"].isin([prefs.Frequency.DAILY, prefs.Frequency.WEEKLY])
        normal.loc[~dated, "send_hour"] = 0
        codes, distinct_index = pd.factorize(pd.MultiIndex.from_frame(normal))
        setting_of_pref = codes.astype("int64")
        distinct = table.iloc[[int(np.flatnonzero(codes == k)[0]) for k in range(len(distinct_index))]]
    default_setting = len(distinct)
    setting = np.where(pref_of >= 0, setting_of_pref[np.maximum(pref_of, 0)] if len(table) else 0, default_setting)
    preferences = [store.from_frame_row(r) for r in distinct.to_dict("records")] + [policy.default_for(0)]
    schedules = [prefs.schedule(p, now, policy.timezone) for p in preferences]

    # due time per pair: its setting's schedule against its mentor's last digest
    last = store.last_digests()
    never = pd.Timestamp("1970-01-01", tz="UTC")  # "no digest yet": before every slot
    known = pd.Series(list(last.values()), index=list(last.keys()), dtype=object)
    last_of = (
        pd.to_datetime(known.reindex(mentors).fillna(never), utc=True).to_numpy(dtype="datetime64[ns]")
        if last
        else np.full(n, np.datetime64(never.tz_localize(None), "ns"))
    )

    def stamps(values: list[dt.datetime | None]) -> np.ndarray:
        return pd.to_datetime(pd.Series(values, dtype=object), utc=True).to_numpy(dtype="datetime64[ns]")

    slot = stamps([s.last_slot if s.last_slot is not None else never for s in schedules])[setting]
    fresh = stamps([s.fresh for s in schedules])[setting]
    sent = stamps([s.sent for s in schedules])[setting]
    due_time = np.where(last_of < slot, fresh, sent)
    off = np.isnat(due_time) & ~urgent
    holds = np.array([p.holds for p in preferences])[setting] & ~urgent
    scheduled = np.array([p.scheduled for p in preferences])[setting] & ~urgent
    now64 = np.datetime64(pd.Timestamp(now).tz_convert("UTC").tz_localize(None), "ns")
    held = pending & ~muted_by_rule & ~off & ~urgent & (due_time > now64)
    old = frame["old"].fillna(False).to_numpy(dtype=bool)
    muted = pending & ~muted_by_rule & off
    sendable = pending & ~muted_by_rule & ~muted & ~held  # due now by preference (urgent included)
    # the age limit: for failed pairs being retried and for pairs no preference holds back, never while held
    too_old = old & (~pending | (sendable & ~holds))
    due = (~pending | sendable) & ~too_old

    skipped: dict[str, list[int]] = defaultdict(list)
    for row in np.flatnonzero(muted_by_rule):
        skipped[policy.rules.rules[rule_of[row]].skip_reason].append(int(log_ids[row]))
    if muted.any():
        skipped[prefs.MUTED_REASON] = log_ids[muted].tolist()
    if too_old.any():
        skipped[too_old_reason] = log_ids[too_old].tolist()
    decision.skipped = dict(skipped)
    if held.any():
        decision.held = int(held.sum())
        decision.held_mentors = set(mentors[held].tolist())
        decision.next_due_at = pd.Timestamp(due_time[held].min()).tz_localize("UTC").to_pydatetime()
    for log_id, event_id, mentor_id in zip(
        log_ids[due].tolist(), event_ids[due].tolist(), mentors[due].tolist(), strict=True
    ):
        decision.due.setdefault(mentor_id, []).append(PendingPair(log_id, event_id, mentor_id))
    decision.urgent = set(log_ids[due & urgent].tolist())
    for mentor_id, setting_id in set(
        zip(mentors[due & scheduled].tolist(), setting[due & scheduled].tolist(), strict=True)
    ):
        decision.digest_expect[mentor_id] = last.get(mentor_id)
        start = last.get(mentor_id) or prefs.period_start(preferences[setting_id], now, policy.timezone)
        if start is not None:
            decision.period_start[mentor_id] = min(decision.period_start.get(mentor_id, start), start)
    decision.due = dict(sorted(decision.due.items(), key=lambda item: (item[1][0].log_id, item[0])))
    waiting = due & pending
    decision.due_pending = int(waiting.sum())
    if decision.due_pending:
        rows = np.flatnonzero(waiting)
        decision.due_since = _released_since(
            created=pd.to_datetime(frame["created_at"].iloc[rows], utc=True).tolist(),
            preference=[preferences[s] for s in setting[rows].tolist()],
            urgent=urgent[rows].tolist(),
            last=[last.get(m) for m in mentors[rows].tolist()],
            timezone=policy.timezone,
        )
    return decision


def _released_since(
    created: list[pd.Timestamp],
    preference: list[prefs.Preference],
    urgent: list[bool],
    last: list[dt.datetime | None],
    timezone: str,
) -> dt.datetime:
    """The earliest time one of these due pairs became due: each pair's due time as of its creation
    (the next digest slot, the end of quiet hours or snooze). Oldest first, stopping once no later pair can
    be earlier (a pair is never due before it was created)."""
    best: dt.datetime | None = None
    for index in sorted(range(len(created)), key=lambda i: created[i]):
        at = created[index].to_pydatetime()
        if best is not None and at >= best:
            break
        digest = last[index]
        before = digest if digest is not None and digest <= at else None
        released = prefs.due_at(preference[index], at, before, timezone, urgent=urgent[index]) or at
        best = released if best is None else min(best, released)
    assert best is not None
    return best


def _facts(frame: pd.DataFrame, failures: Mapping[int, int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_type": frame["event_type"].astype(str),
            "course_id": frame["course_id"],
            "activity_id": frame["activity_id"],
            "score_pct": pd.to_numeric(frame["score_pct"], errors="coerce"),
            "failures_in_row": frame["event_id"].map(failures).fillna(0).astype("int64"),
        }
    )


def _matches(rule: Rule, facts: pd.DataFrame) -> np.ndarray:
    """Which rows ``rule`` matches: column-wise :meth:`Rule.matches`."""
    mask = np.ones(len(facts), dtype=bool)
    if rule.event_types is not None:
        mask &= facts["event_type"].isin(rule.event_types).to_numpy()
    if rule.courses is not None:
        mask &= facts["course_id"].isin(rule.courses).fillna(False).to_numpy(dtype=bool)
    if rule.activities is not None:
        mask &= facts["activity_id"].isin(rule.activities).fillna(False).to_numpy(dtype=bool)
    if rule.min_score_pct is not None:
        mask &= (facts["score_pct"] >= rule.min_score_pct).fillna(False).to_numpy(dtype=bool)
    if rule.max_score_pct is not None:
        mask &= (facts["score_pct"] <= rule.max_score_pct).fillna(False).to_numpy(dtype=bool)
    if rule.min_failures_in_row is not None:
        mask &= (facts["failures_in_row"] >= rule.min_failures_in_row).to_numpy()
    return mask


def _resolve(frame: pd.DataFrame, table: pd.DataFrame) -> np.ndarray:
    """The row in ``table`` (stored preferences) of each pair's most specific preference
    (student > course > all); -1: none, the default applies."""
    result = np.full(len(frame), -1)
    if table.empty:
        return result
    table = table.assign(index=np.arange(len(table)))
    pairs = frame[["mentor_id", "student_id", "course_id"]].copy()
    pairs["mentor_id"] = pairs["mentor_id"].astype("int64")
    pairs["student_id"] = pairs["student_id"].astype("int64")
    pairs["course_id"] = pairs["course_id"].astype("Int64").fillna(-1).astype("int64")
    table["mentor_id"] = table["mentor_id"].astype("int64")
    table["scope_id"] = table["scope_id"].astype("int64")
    for kind, column in (("all", None), ("course", "course_id"), ("student", "student_id")):  # least specific first
        scoped = table[table["scope_kind"] == kind]
        if scoped.empty:
            continue
        if column is None:
            found = pairs[["mentor_id"]].merge(scoped[["mentor_id", "index"]], on="mentor_id", how="left")
        else:
            right = scoped.rename(columns={"scope_id": column})[["mentor_id", column, "index"]]
            found = pairs[["mentor_id", column]].merge(right, on=["mentor_id", column], how="left")
        hit = found["index"].notna().to_numpy()
        result[hit] = found["index"].to_numpy()[hit].astype("int64")
    return result
