"""``mentor_notification_preferences`` (one row per mentor and scope) and ``mentor_digest_state``.

Written by ``lms-activity prefs``; read by every notify run when it decides what is due.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Mapping
from types import SimpleNamespace
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lms_activity_pipeline import db
from lms_activity_pipeline.domain.preferences import (
    Preference,
    PreferenceError,
    QuietHours,
    parse_quiet_hours,
    parse_snooze,
    parse_timezone,
)
from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.warehouse.schema import mentor_digest_state, mentor_notification_preferences

prefs = mentor_notification_preferences
state = mentor_digest_state


def _from_row(row: sa.Row | SimpleNamespace) -> Preference:
    quiet = None
    if isinstance(row.quiet_start, str) and isinstance(row.quiet_end, str):
        quiet = QuietHours(dt.time.fromisoformat(row.quiet_start), dt.time.fromisoformat(row.quiet_end))
    snooze = row.snooze_until
    if not isinstance(snooze, str | dt.date):
        snooze = None
    elif isinstance(snooze, str):
        snooze = dt.date.fromisoformat(snooze[:10])
    elif isinstance(snooze, dt.datetime):
        snooze = snooze.date()
    return Preference(
        mentor_id=int(row.mentor_id),
        scope_kind=row.scope_kind,
        scope_id=int(row.scope_id),
        frequency=row.frequency,
        send_hour=int(row.send_hour),
        weekday=row.weekday,
        timezone=row.timezone if isinstance(row.timezone, str) else None,
        quiet_hours=quiet,
        snooze_until=snooze,
    )


def _values(p: Preference) -> dict[str, object]:
    return {
        "mentor_id": p.mentor_id,
        "scope_kind": p.scope_kind,
        "scope_id": p.scope_id,
        "frequency": p.frequency,
        "send_hour": p.send_hour,
        "weekday": p.weekday,
        "timezone": p.timezone,
        "quiet_start": f"{p.quiet_hours.start:%H:%M}" if p.quiet_hours else None,
        "quiet_end": f"{p.quiet_hours.end:%H:%M}" if p.quiet_hours else None,
        "snooze_until": p.snooze_until,
    }


class PreferenceStore:
    """The preferences and digest state on a warehouse engine (schema translation included)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, mentor_id: int, scope_kind: str, scope_id: int) -> Preference | None:
        stmt = sa.select(prefs).where(
            prefs.c.mentor_id == mentor_id, prefs.c.scope_kind == scope_kind, prefs.c.scope_id == scope_id
        )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else _from_row(row)

    def put(self, preference: Preference, now: dt.datetime) -> None:
        """Insert or replace the preference of its mentor and scope."""
        values = _values(preference)
        with db.write_transaction(self.engine) as conn:
            stmt = db.insert(conn, prefs).values(**values, updated_at=to_utc(now))
            keys = ["mentor_id", "scope_kind", "scope_id"]
            update = {k: v for k, v in values.items() if k not in keys} | {"updated_at": to_utc(now)}
            conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=update))

    def clear(self, mentor_id: int, scope_kind: str, scope_id: int) -> int:
        with db.write_transaction(self.engine) as conn:
            return conn.execute(
                prefs.delete().where(
                    prefs.c.mentor_id == mentor_id, prefs.c.scope_kind == scope_kind, prefs.c.scope_id == scope_id
                )
            ).rowcount

    def all(self, mentor_ids: Collection[int] | None = None) -> list[Preference]:
        """Every preference (of ``mentor_ids`` only, if given), by mentor then scope."""
        stmt = sa.select(prefs).order_by(prefs.c.mentor_id, prefs.c.scope_kind, prefs.c.scope_id)
        if mentor_ids is not None:
            stmt = stmt.where(prefs.c.mentor_id.in_(sorted(mentor_ids)))
        with self.engine.connect() as conn:
            return [_from_row(r) for r in conn.execute(stmt)]

    def frame(self) -> pd.DataFrame:
        """Every preference row as stored (``mentor_id, scope_kind, scope_id, frequency, send_hour, weekday,
        timezone, quiet_start, quiet_end, snooze_until``), for set-based resolution."""
        columns = [c for c in prefs.columns if c.name != "updated_at"]
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*columns)).all()
        return pd.DataFrame.from_records([tuple(r) for r in rows], columns=[c.name for c in columns])

    @staticmethod
    def from_frame_row(row: Mapping[Any, Any]) -> Preference:
        """A :class:`Preference` from a row of :meth:`frame`."""
        return _from_row(SimpleNamespace(**{str(k): v for k, v in row.items()}))

    def any(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(prefs.c.mentor_id).limit(1)).first() is not None

    def last_digests(self) -> dict[int, dt.datetime]:
        """``mentor_digest_state``: when each mentor's last scheduled digest was claimed."""
        with self.engine.connect() as conn:
            return {
                int(r.mentor_id): to_utc(r.last_digest_at)
                for r in conn.execute(sa.select(state).where(state.c.last_digest_at.is_not(None)))
            }


def take_digest_slot(conn: sa.Connection, mentor_id: int, expected: dt.datetime | None, now: dt.datetime) -> bool:
    """Compare-and-set ``last_digest_at`` of a mentor from ``expected`` (what the run decided on) to ``now``.

    False when another run sent a digest meanwhile: the caller then takes nothing (its decision is stale).
    Called inside the claim's transaction, under the mentor's claim lock.
    """
    current = conn.execute(sa.select(state.c.last_digest_at).where(state.c.mentor_id == mentor_id)).first()
    seen = None if current is None else to_utc(current.last_digest_at)
    if seen != (None if expected is None else to_utc(expected)):
        return False
    if current is None:
        conn.execute(db.insert(conn, state).values(mentor_id=mentor_id, last_digest_at=to_utc(now)))
    else:
        conn.execute(state.update().where(state.c.mentor_id == mentor_id).values(last_digest_at=to_utc(now)))
    return True


def with_changes(preference: Preference, changes: Mapping[str, object]) -> Preference:
    """``preference`` with the given fields replaced (validated again)."""
    return dataclasses.replace(preference, **changes)  # type: ignore[arg-type]


#: Values that switch an option off (``--quiet-hours none``, ``--snooze-until off``, ``--timezone -``).
NONE_WORDS = {"none", "off", "-"}


def find_mentor(reader: Any, key: str) -> tuple[int, str]:
    """The LMS user ``key`` (user id, username or e-mail) names, as ``(id, "mentor <id> (<username>)")``.

    ``reader`` is an :class:`~lms_activity_pipeline.lms.reader.LMSReader` (read-only)."""
    rows = reader.users_matching(key)
    if rows.empty:
        raise PreferenceError(f"MENTOR {key!r}: no LMS user has this id, username or e-mail")
    if len(rows) > 1:
        ids = ", ".join(str(int(i)) for i in rows["id"])
        raise PreferenceError(f"MENTOR {key!r} matches several LMS users ({ids}): give the user id")
    row = rows.iloc[0]
    return int(row["id"]), f"mentor {int(row['id'])} ({row['username']})"


def set_preference(
    store: PreferenceStore,
    default_frequency: str,
    mentor_id: int,
    scope_kind: str,
    scope_id: int,
    options: Mapping[str, Any],
    now: dt.datetime,
) -> Preference:
    """Apply ``options`` (``frequency``, ``send_hour``, ``weekday``, ``timezone``, ``quiet_hours``,
    ``snooze_until`` as given by a user; None: unchanged) to the stored preference of the scope (a new one
    starts from ``default_frequency``), store it and return it. ``lms-activity prefs set`` and the dashboard
    both go through here; a bad value raises :class:`PreferenceError` naming the option."""
    current = store.get(mentor_id, scope_kind, scope_id) or Preference(
        mentor_id, scope_kind, scope_id, frequency=default_frequency
    )
    changes: dict[str, object] = {}
    for name in ("frequency", "send_hour", "weekday"):
        if options.get(name) is not None:
            changes[name] = options[name]
    parsers = {"timezone": parse_timezone, "quiet_hours": parse_quiet_hours, "snooze_until": parse_snooze}
    for name, parse in parsers.items():
        text = options.get(name)
        if text is not None:
            changes[name] = None if str(text).lower() in NONE_WORDS else parse(str(text))
    preference = with_changes(current, changes)
    store.put(preference, now)
    return preference
