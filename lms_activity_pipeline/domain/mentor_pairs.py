"""Which mentors hear about which events: the (event, mentor) pairs that enter the outbox.

Pure pandas, no Dagster, no database. A student may have several mentors; every
mentor whose assignment is active at the event's time gets the event, but only
while the event is young enough (``LMS_NOTIFY_MAX_AGE_HOURS``): backfills of old
days store events without notifying anyone.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

PAIR_COLUMNS = ["event_key", "mentor_id"]


def empty_pairs() -> pd.DataFrame:
    return pd.DataFrame({"event_key": pd.Series(dtype=object), "mentor_id": pd.Series(dtype="Int64")})


def notification_pairs(
    events: pd.DataFrame, assignments: pd.DataFrame, *, now: dt.datetime, max_age: dt.timedelta
) -> pd.DataFrame:
    """``event_key, mentor_id`` for every event younger than ``max_age`` and each of its mentors.

    ``events`` needs ``event_key, student_id, timestamp``; ``assignments`` the
    typed ``MentorAssignments`` (``student_id, mentor_id, assigned_at, ended_at``).
    A mentor counts when ``assigned_at <= timestamp < ended_at`` (or no end).
    Duplicates (a mentor assigned twice) collapse to one pair.
    """
    if events.empty or assignments.empty:
        return empty_pairs()
    cutoff = pd.Timestamp(now).tz_convert("UTC") - pd.Timedelta(max_age)
    young = events.loc[events["timestamp"] >= cutoff, ["event_key", "student_id", "timestamp"]]
    if young.empty:
        return empty_pairs()
    joined = young.merge(assignments[["student_id", "mentor_id", "assigned_at", "ended_at"]], on="student_id")
    active = (joined["assigned_at"] <= joined["timestamp"]) & (
        joined["ended_at"].isna() | (joined["ended_at"] > joined["timestamp"])
    )
    pairs = joined.loc[active, PAIR_COLUMNS].drop_duplicates()
    pairs["mentor_id"] = pairs["mentor_id"].astype("Int64")
    return pairs.sort_values(PAIR_COLUMNS).reset_index(drop=True)
