"""``student_risk`` from ``lms_activity_events``: one pass per day of the window, each cut off at the day's end.

Reads the warehouse, never the LMS; each day's rows become exactly what the events before its end say,
so recomputing a day (today, or a year later) is idempotent and gives the same rows.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import pandas as pd

from lms_activity_pipeline.domain import risk
from lms_activity_pipeline.warehouse.load import UpsertResult
from lms_activity_pipeline.warehouse.store import Warehouse

PREVIEW_COLUMNS = ["student_id", "course_id", "as_of", "risk_level", "risk_score", "reasons"]


@dataclass(frozen=True)
class RiskReport:
    """The days computed: rows per level, on-track students, what was written, a preview of the worst rows."""

    days: list[dt.date]
    upserted: UpsertResult
    levels: dict[str, int]
    on_track: int
    preview: pd.DataFrame
    seconds: float
    model: str = risk.RULES_MODEL
    per_day: dict[str, int] = field(default_factory=dict)


def local_days(start: dt.datetime, end: dt.datetime, timezone: str) -> list[tuple[dt.date, dt.datetime]]:
    """The local days of ``[start, end)`` with each day's end (its cut-off) as an aware datetime."""
    zone = ZoneInfo(timezone)
    first, last = start.astimezone(zone).date(), (end - dt.timedelta(microseconds=1)).astimezone(zone).date()
    days = []
    day = first
    while day <= last:
        nxt = day + dt.timedelta(days=1)
        days.append((day, dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=zone)))
        day = nxt
    return days


def assess_day(
    store: Warehouse, as_of: dt.date, cutoff: dt.datetime, timezone: str, thresholds: risk.RiskThresholds
) -> pd.DataFrame:
    """The ``student_risk`` rows of one day, from what the warehouse held before ``cutoff``."""
    start = cutoff - dt.timedelta(days=thresholds.horizon_days)
    events, passed, names = store.risk_inputs(start, cutoff)
    return risk.assess_risk(events, passed, as_of, cutoff, timezone, thresholds, names)


def compute_student_risk(
    store: Warehouse, start: dt.datetime, end: dt.datetime, timezone: str, thresholds: risk.RiskThresholds
) -> RiskReport:
    """Recompute ``student_risk`` for every local day of ``[start, end)``."""
    began = time.perf_counter()
    total, levels, on_track, per_day = UpsertResult(0, 0, 0), dict.fromkeys(risk.LEVELS, 0), 0, {}
    previews = []
    days = local_days(start, end, timezone)
    for as_of, cutoff in days:
        rows = assess_day(store, as_of, cutoff, timezone, thresholds)
        total += store.write_student_risk(rows, as_of)
        for level, n in rows["risk_level"].value_counts().items():
            levels[str(level)] += int(n)
        on_track += int(rows["on_track"].sum()) if not rows.empty else 0
        per_day[as_of.isoformat()] = len(rows)
        previews.append(rows.sort_values("risk_score", ascending=False, kind="mergesort").head(20))
    preview = pd.concat(previews, ignore_index=True) if previews else risk.empty_risk()
    preview = preview.sort_values("risk_score", ascending=False, kind="mergesort").head(20)[PREVIEW_COLUMNS]
    preview = preview.assign(reasons=[", ".join(r["code"] for r in reasons) for reasons in preview["reasons"]])
    return RiskReport(
        days=[d for d, _ in days],
        upserted=total,
        levels=levels,
        on_track=on_track,
        preview=preview,
        seconds=time.perf_counter() - began,
        per_day=per_day,
    )
