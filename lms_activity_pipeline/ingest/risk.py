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

from lms_activity_pipeline.domain import risk, risk_model
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
    store: Warehouse,
    as_of: dt.date,
    cutoff: dt.datetime,
    timezone: str,
    thresholds: risk.RiskThresholds,
    model: risk_model.RiskModel | None = None,
) -> pd.DataFrame:
    """The ``student_risk`` rows of one day, from what the warehouse held before ``cutoff`` (by the rules,
    or scored by the learned ``model``)."""
    start = cutoff - dt.timedelta(days=thresholds.horizon_days)
    events, passed, names = store.risk_inputs(start, cutoff)
    rows = risk.assess_risk(events, passed, as_of, cutoff, timezone, thresholds, names)
    if model is None:
        return rows
    return risk_model.score(rows, risk_model.features_of(rows, events, cutoff), model)


# --- learned at-risk model (issue 13, LMS_RISK_MODEL=learned) ---
#: Training days: every ``TRAIN_STEP_DAYS``-th day of the ``TRAIN_SPAN_DAYS`` days whose labels are known.
TRAIN_SPAN_DAYS = 42
TRAIN_STEP_DAYS = 2


def training_samples(
    store: Warehouse,
    until: dt.datetime,
    timezone: str,
    thresholds: risk.RiskThresholds,
    span_days: int = TRAIN_SPAN_DAYS,
    step_days: int = TRAIN_STEP_DAYS,
) -> pd.DataFrame:
    """Features, rules' level and label per (student, course, day) for the days whose 14-day label window
    ends by ``until`` (only events before ``until`` are read), mentors' feedback joined."""
    last = (until - dt.timedelta(days=risk_model.LABEL_DAYS + 1)).astimezone(ZoneInfo(timezone)).date()
    frames = []
    for back in range(0, span_days, step_days):
        as_of = last - dt.timedelta(days=back)
        nxt = as_of + dt.timedelta(days=1)
        cutoff = dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=ZoneInfo(timezone))
        start = cutoff - dt.timedelta(days=thresholds.horizon_days)
        events, passed, names = store.risk_inputs(start, cutoff)
        rows = risk.assess_risk(events, passed, as_of, cutoff, timezone, thresholds, names)
        if rows.empty:
            continue
        later = store.risk_inputs(cutoff, cutoff + dt.timedelta(days=risk_model.LABEL_DAYS))[0]
        x = risk_model.features_of(rows, events, cutoff)
        frames.append(
            x.assign(
                as_of=as_of,
                risk_level=rows["risk_level"].to_numpy(),
                label=risk_model.labels_of(rows, pd.concat([events, later], ignore_index=True), cutoff),
            )
        )
    if not frames:
        return pd.DataFrame(columns=["student_id", "course_id", "as_of", *risk_model.FEATURES, "label"])
    samples = pd.concat(frames, ignore_index=True)
    return risk_model.apply_feedback(samples, store.risk_feedback_labels())


def train_risk_model(
    store: Warehouse, until: dt.datetime, timezone: str, thresholds: risk.RiskThresholds
) -> risk_model.RiskModel:
    """Fit the learned model on the history before ``until`` and store it under its version."""
    samples = training_samples(store, until, timezone, thresholds)
    if samples.empty:
        raise ValueError(f"no history to train the learned risk model on before {until:%Y-%m-%d}")
    model = risk_model.fit(samples, trained_at=until)
    store.save_risk_model(model)
    return model


def compute_student_risk(
    store: Warehouse,
    start: dt.datetime,
    end: dt.datetime,
    timezone: str,
    thresholds: risk.RiskThresholds,
    model: risk_model.RiskModel | None = None,
) -> RiskReport:
    """Recompute ``student_risk`` for every local day of ``[start, end)`` (scored by ``model`` if given)."""
    began = time.perf_counter()
    total, levels, on_track, per_day = UpsertResult(0, 0, 0), dict.fromkeys(risk.LEVELS, 0), 0, {}
    previews = []
    days = local_days(start, end, timezone)
    for as_of, cutoff in days:
        rows = assess_day(store, as_of, cutoff, timezone, thresholds, model)
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
        model=risk.RULES_MODEL if model is None else model.name,
    )
