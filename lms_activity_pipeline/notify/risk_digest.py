"""At-risk digests to mentors through ``risk_digest_log``, and their 👍/👎 reactions read back into ``risk_feedback``.

:meth:`RiskDigests.run`, called by every notify run:

1. takes the latest ``student_risk`` day; for each (mentor, course) with students flagged that day (or
   flagged in its last digest) that is due (the mentor's notification preference for the course or all
   students where one exists, else ``LMS_RISK_DIGEST_FREQUENCY``), enqueues one row per student told; the primary key makes a second
   enqueue of the same day a no-op, so a flag is told to a mentor once per (student, course, day);
2. sends one digest per (mentor, course, day) with open rows, as a Zulip DM (dry-run without Zulip): marks
   the rows ``sending`` with the text's digest first, so a send interrupted or of uncertain outcome is
   looked up on Zulip before any resend (as the event notifications do).

:func:`read_feedback` asks Zulip for each recent digest message (``GET /messages/{id}``) and records the
mentor's 👍 (useful) and 👎 (wrongly flagged) reactions, one row per flagged student of the message.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pandas as pd
from sqlalchemy.engine import Connection, Engine

from lms_activity_pipeline import db
from lms_activity_pipeline.domain import risk_digest as rd
from lms_activity_pipeline.domain.delivery import ReplyKind, RetryPolicy, call_with_retries, call_without_duplicates
from lms_activity_pipeline.domain.recipients import MentorContact, ZulipAccount
from lms_activity_pipeline.notify.directory import MentorDirectory
from lms_activity_pipeline.notify.notifier import MentorSource, ZulipSetup
from lms_activity_pipeline.notify.zulip_gateway import ZulipGateway, content_digest
from lms_activity_pipeline.warehouse import risk as risk_sql
from lms_activity_pipeline.warehouse import risk_digest as log_sql
from lms_activity_pipeline.warehouse.preferences import PreferenceStore
from lms_activity_pipeline.warehouse.schema import risk_digest_log
from lms_activity_pipeline.warehouse.zulip_user_cache import ZulipUserCache

#: The digest cadence of a (mentor, course): the mentor's notification preference for the course or for all
#: students where one exists (:func:`preference_cadence`), else ``LMS_RISK_DIGEST_FREQUENCY``.
FrequencyFor = Callable[[int, int], str]
#: How far back the "last digest" of a (mentor, course) is looked for.
PREVIOUS_DIGEST_WINDOW = dt.timedelta(days=60)
#: A digest row still ``sending`` after this long belongs to a stopped run (or its send was uncertain): the
#: next run looks it up on Zulip before sending again.
STALE_SENDING = dt.timedelta(minutes=10)
#: Digest messages whose reactions are read back, by age.
FEEDBACK_WINDOW = dt.timedelta(days=30)


@dataclass
class DigestSummary:
    """What a run did with at-risk digests."""

    day: dt.date | None = None
    enqueued: int = 0
    messages: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    preview: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.day is None:
            return "at-risk digests: no student_risk day computed yet"
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items())) or "nothing to tell"
        return f"at-risk digests for {self.day}: {self.enqueued} flags enqueued, {self.messages} messages ({counts})"


class RiskDigests:
    """Enqueues and sends at-risk digests. ``zulip=None`` is dry-run; ``clock`` and ``sleep`` are injectable."""

    def __init__(
        self,
        engine: Engine,
        mentors: MentorSource,
        zulip: ZulipSetup | None,
        *,
        frequency: str,
        timezone: str,
        run_id: str,
        log: logging.Logger | Any,
        frequency_for: FrequencyFor | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.engine, self.mentors, self.zulip = engine, mentors, zulip
        self.frequency_for = frequency_for or preference_cadence(engine, frequency)
        self.timezone, self.run_id, self.log, self.clock, self.sleep = timezone, run_id, log, clock, sleep
        self.directory: MentorDirectory | None = None
        if zulip is not None:
            self.directory = MentorDirectory(
                zulip.gateway,
                zulip.policy,
                cache=lambda site: ZulipUserCache(engine, site),
                ttl=zulip.user_ttl,
                unknown_ttl=zulip.unknown_user_ttl,
                clock=clock,
                sleep=sleep,
            )

    def run(self) -> DigestSummary:
        summary = DigestSummary()
        with self.engine.connect() as conn:
            summary.day = risk_sql.latest_day(conn)
        if summary.day is not None:
            summary.enqueued = self.enqueue_due(summary.day)
        self.send_open(summary)
        self.log.info(summary.describe())
        return summary

    def enqueue_due(self, day: dt.date) -> int:
        """Enqueue the rows of every due (mentor, course) for ``day``; returns how many were new."""
        now = self.clock()
        with db.write_transaction(self.engine) as conn:
            return log_sql.enqueue(conn, self._due_rows(conn, day, now), now)

    def has_work(self) -> bool:
        """Would a run now send something: open rows, or a due (mentor, course) with something untold?"""
        with self.engine.connect() as conn:
            if not log_sql.open_rows(conn, self.clock() - STALE_SENDING).empty:
                return True
            day = risk_sql.latest_day(conn)
            return day is not None and not self._due_rows(conn, day, self.clock()).empty

    def _due_rows(self, conn: Connection, day: dt.date, now: dt.datetime) -> pd.DataFrame:
        """The rows due (mentor, course) pairs would tell about ``day`` that are not in the log yet."""
        flagged = log_sql.flagged_on(conn, day)
        previous = log_sql.previously_told(conn, day, day - PREVIOUS_DIGEST_WINDOW)
        mentors = set(flagged["mentor_id"].astype(int)) | set(previous["mentor_id"].astype(int))
        last = log_sql.last_sent(conn, mentors)

        def due(mentor_id: int, course_id: int) -> bool:
            frequency = self.frequency_for(mentor_id, course_id)
            return rd.is_due(frequency, last.get((mentor_id, course_id)), now, self.timezone)

        rows = rd.plan_enqueue(flagged, previous, due, day)
        if rows.empty:
            return rows
        logged = log_sql.logged_keys(conn, day)
        keys = zip(rows["mentor_id"], rows["student_id"], rows["course_id"], strict=True)
        return rows[[(int(m), int(s), int(c)) not in logged for m, s, c in keys]].reset_index(drop=True)

    # --- sending ------------------------------------------------------------------------

    def send_open(self, summary: DigestSummary) -> None:
        with self.engine.connect() as conn:
            rows = log_sql.open_rows(conn, self.clock() - STALE_SENDING)
        if rows.empty:
            return
        contacts = self._contacts(sorted(set(rows["mentor_id"].astype(int))))
        for mentor_id in sorted(contacts):
            mentor_rows = rows[rows["mentor_id"] == mentor_id]
            try:
                self._mentor(contacts[mentor_id], mentor_rows, summary)
            except Exception as exc:  # one mentor's trouble never stops the others
                self.log.exception(f"at-risk digest to mentor {mentor_id}: unexpected error")
                for course, day, group in _groups(mentor_rows):
                    self._set(mentor_id, course, day, group, "failed", summary, error=f"internal error: {exc}")

    def _mentor(self, contact: MentorContact, rows: pd.DataFrame, summary: DigestSummary) -> None:
        groups = _groups(rows)
        mentor = contact.mentor_id
        account: ZulipAccount | None = None
        if self.zulip is not None:
            if reason := contact.skip_reason:
                for course, day, group in groups:
                    self._set(mentor, course, day, group, "skipped", summary, error=reason)
                return
            assert self.directory is not None and contact.email is not None
            resolution = self.directory.resolve(contact.email)
            if resolution.account is None or resolution.account.skip_reason:
                error = (
                    resolution.account.skip_reason
                    if resolution.account is not None
                    else f"Zulip user lookup failed: {resolution.failure.error if resolution.failure else 'no reply'}"
                )
                status = "skipped" if resolution.account is not None else "failed"
                for course, day, group in groups:
                    self._set(mentor, course, day, group, status, summary, error=error, attempt=True)
                return
            account = resolution.account
        for course, day, group in groups:
            text = self.render(mentor, course, day, group)
            if account is None:
                self.log.debug(f"[dry-run] at-risk digest to mentor {contact.label}:\n{text}")
                self._set(mentor, course, day, group, "dry_run", summary, attempt=True, sent_at=self.clock())
                summary.messages += 1
                self._preview(summary, text)
                continue
            self._send(account, mentor, course, day, group, text, summary)

    def _send(
        self,
        account: ZulipAccount,
        mentor: int,
        course: int,
        day: dt.date,
        group: pd.DataFrame,
        text: str,
        summary: DigestSummary,
    ) -> None:
        zulip = self.zulip
        assert zulip is not None and account.user_id is not None
        to, digest = [account.user_id], content_digest(text)
        find = self._interrupted(group)
        if find is not None:  # a send of this group may have happened: ask Zulip before sending again
            lookup = call_with_retries(
                lambda: zulip.gateway.find_direct(to, find[0], find[1]), zulip.policy, self.sleep, zulip.gateway.pause
            )
            if lookup.ok and lookup.reply.body.get("id") is not None:
                self._set(
                    mentor,
                    course,
                    day,
                    group,
                    "sent",
                    summary,
                    message_id=int(lookup.reply.body["id"]),
                    sent_at=self.clock(),
                )
                summary.messages += 1
                return
            if not lookup.ok:
                self.log.warning(f"at-risk digest to mentor {mentor}: earlier send still uncertain ({lookup.error})")
                return
        started = self.clock()
        students = [int(x) for x in group["student_id"]]
        try:
            with db.write_transaction(self.engine) as conn:
                claimed = log_sql.claim_group(
                    conn,
                    mentor,
                    course,
                    day,
                    students,
                    started - STALE_SENDING,
                    attempted_at=started,
                    content_digest=digest,
                    zulip_user_id=account.user_id,
                )
                if claimed < len(students):
                    raise _TakenByAnotherRun  # rolls the partial claim back
        except _TakenByAnotherRun:
            self.log.info(f"at-risk digest to mentor {mentor}, course {course}: taken by another run")
            return
        epoch = time.time()
        delivery = call_without_duplicates(
            lambda: zulip.gateway.send_direct(to, text),
            lambda: zulip.gateway.find_direct(to, digest, epoch),
            zulip.policy,
            self.sleep,
            zulip.gateway.pause,
        )
        if delivery.ok:
            message_id = delivery.reply.body.get("id")
            self._set(
                mentor,
                course,
                day,
                group,
                "sent",
                summary,
                message_id=None if message_id is None else int(message_id),
                sent_at=self.clock(),
                error_message=None,
            )
            summary.messages += 1
            self._preview(summary, text)
        elif delivery.reply.kind is ReplyKind.UNCERTAIN:
            self._set(mentor, course, day, group, "sending", summary, error_message=f"uncertain: {delivery.error}")
        else:
            self._set(mentor, course, day, group, "failed", summary, error=delivery.error)
            self.log.error(f"at-risk digest to mentor {mentor} failed: {delivery.error}")

    @staticmethod
    def _interrupted(group: pd.DataFrame) -> tuple[str, float] | None:
        """(content digest, send time) of an earlier send of the group that may have arrived."""
        sending = group[(group["status"] == "sending") & group["content_digest"].notna()]
        if sending.empty:
            return None
        first = sending.iloc[0]
        return str(first["content_digest"]), pd.Timestamp(first["attempted_at"]).timestamp()

    def _set(
        self,
        mentor: int,
        course: int,
        day: dt.date,
        group: pd.DataFrame,
        status: str,
        summary: DigestSummary,
        *,
        error: str | None = None,
        count: bool = True,
        attempt: bool = False,
        **values: Any,
    ) -> None:
        students = [int(s) for s in group["student_id"]]
        if error is not None:
            values["error_message"] = error
        if attempt:
            values["attempts"] = risk_digest_log.c.attempts + 1
        with db.write_transaction(self.engine) as conn:
            written = log_sql.update_group(conn, mentor, course, day, students, status=status, **values)
        if count:
            summary.counts[status] += written

    # --- rendering ----------------------------------------------------------------------

    def render(self, mentor: int, course: int, day: dt.date, group: pd.DataFrame) -> str:
        """The digest text of one (mentor, course, day) group of rows."""
        students = [int(s) for s in group["student_id"]]
        with self.engine.connect() as conn:
            risk = log_sql.risk_rows_of(conn, day, course, students).set_index("student_id")
            good = log_sql.on_track_of(conn, day, course, mentor)
        title = None
        if not risk.empty:
            title = risk["course_title"].dropna().iloc[0] if risk["course_title"].notna().any() else None
        elif not good.empty:
            title = good["course_title"].iloc[0]
        items = []
        for row in group.sort_values(["risk_level", "student_id"]).to_dict("records"):
            sid = int(row["student_id"])
            known = risk.loc[sid] if sid in risk.index else None
            name = None if known is None else _text(known["student_username"])
            reasons = [] if known is None or row["risk_level"] == rd.RESOLVED else list(known["reasons"] or [])
            items.append(rd.DigestStudent(sid, name, str(row["risk_level"]), reasons, bool(row["is_new"])))
        on_track = [
            (str(n) if n else None, int(d)) for n, d in zip(good["student_username"], good["streak_days"], strict=True)
        ]
        return rd.render_digest(rd.Digest(title, day, items, on_track))

    def _contacts(self, mentor_ids: list[int]) -> dict[int, MentorContact]:
        frame = self.mentors(mentor_ids)
        found = {
            int(r["id"]): MentorContact(
                mentor_id=int(r["id"]),
                username=_text(r.get("username")),
                email=_text(r.get("email")),
                full_name=_text(r.get("full_name")),
                is_active=None if pd.isna(r.get("is_active")) else bool(r.get("is_active")),
            )
            for r in frame.to_dict("records")
        }
        return {m: found.get(m, MentorContact(mentor_id=m, in_lms=False)) for m in mentor_ids}

    @staticmethod
    def _preview(summary: DigestSummary, text: str) -> None:
        if len(summary.preview) < 5:
            summary.preview.append(text)


class _TakenByAnotherRun(Exception):
    """Another notify run claimed (some of) a digest's rows first."""


def preference_cadence(engine: Engine, default: str) -> FrequencyFor:
    """Each (mentor, course)'s digest cadence under the mentors' notification preferences, read now."""
    table = PreferenceStore(engine).frame()
    by_course: dict[int, dict[int, str]] = {}
    for_all: dict[int, str] = {}
    for mentor, kind, scope, frequency in table[["mentor_id", "scope_kind", "scope_id", "frequency"]].to_numpy(
        dtype=object
    ):
        if kind == "course":
            by_course.setdefault(int(mentor), {})[int(scope)] = str(frequency)
        elif kind == "all":
            for_all[int(mentor)] = str(frequency)
    return lambda mentor, course: rd.cadence(default, course, by_course.get(mentor, {}), for_all.get(mentor))


def digest_due(engine: Engine, *, frequency: str, timezone: str) -> bool:
    """Would a notify run now send an at-risk digest (open rows, or a due pair with something untold)?"""
    probe = RiskDigests(
        engine, lambda _ids: pd.DataFrame(), None, frequency=frequency, timezone=timezone, run_id="", log=logging
    )
    return probe.has_work()


def _groups(rows: pd.DataFrame) -> list[tuple[int, dt.date, pd.DataFrame]]:
    """The rows of each (course, day), in that order."""
    keys = sorted({(int(c), d) for c, d in zip(rows["course_id"], rows["as_of"], strict=True)})
    return [(c, d, rows[(rows["course_id"] == c) & (rows["as_of"] == d)]) for c, d in keys]


def _text(value: Any) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return str(value).strip() or None


@dataclass
class FeedbackSummary:
    messages: int = 0
    unreadable: int = 0
    reactions: int = 0
    recorded: int = 0

    def describe(self) -> str:
        return (
            f"risk feedback: {self.messages} digest messages read ({self.unreadable} unreadable), "
            f"{self.reactions} 👍/👎 reactions, {self.recorded} new risk_feedback rows"
        )


def read_feedback(
    engine: Engine,
    gateway: ZulipGateway,
    policy: RetryPolicy,
    *,
    now: dt.datetime,
    log: logging.Logger | Any,
    sleep: Callable[[float], None] = time.sleep,
) -> FeedbackSummary:
    """Read the mentors' reactions to digests sent in the last :data:`FEEDBACK_WINDOW` into ``risk_feedback``."""
    summary = FeedbackSummary()
    with engine.connect() as conn:
        sent = log_sql.sent_messages(conn, now - FEEDBACK_WINDOW)
    rows: list[dict[str, Any]] = []
    for mid in sorted({int(m) for m in sent["message_id"]}):
        told = sent[sent["message_id"] == mid]
        summary.messages += 1
        delivery = call_with_retries(partial(gateway.get_message, mid), policy, sleep, gateway.pause)
        if not delivery.ok:
            summary.unreadable += 1
            log.warning(f"digest message {mid}: could not read its reactions: {delivery.error}")
            continue
        mentor_zulip_ids = {int(z) for z in told["zulip_user_id"].dropna()}
        labels = {
            rd.REACTION_LABELS[str(r.get("emoji_code"))]
            for r in delivery.reply.body["message"].get("reactions") or []
            if str(r.get("emoji_code")) in rd.REACTION_LABELS and _int(r.get("user_id")) in mentor_zulip_ids
        }
        summary.reactions += len(labels)
        rows += [
            {
                "message_id": mid,
                "mentor_id": int(row["mentor_id"]),
                "student_id": int(row["student_id"]),
                "course_id": int(row["course_id"]),
                "label": label,
                "as_of": row["as_of"],
                "reacted_at": now,
            }
            for label in sorted(labels)
            for row in told.to_dict("records")
        ]
    with db.write_transaction(engine) as conn:
        summary.recorded = log_sql.write_feedback(conn, rows)
    log.info(summary.describe())
    return summary


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
