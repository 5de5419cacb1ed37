"""Students at risk: explainable signals, reason codes and levels per (student, course, day). Pure pandas.

Point in time: :func:`assess_risk` sees only events before ``cutoff`` (the end of the partition day), so
a day computed later gives the same rows as it did on the day. The caller hands it

- ``events``: the events of ``[cutoff - horizon, cutoff)`` (:data:`RISK_EVENT_COLUMNS`),
- ``passed``: every ``(student_id, activity_id)`` with an ``exam_passed`` event before ``cutoff``.

A (student, course) pair is assessed while the student has an event in the course within the horizon.

``inactive`` needs an exam of the course the student has taken (an exam event in the horizon) and not
passed. The rules model (``rules-<version>``): ``high`` when ``inactive`` holds or two or more other reasons hold,
``medium`` when one other reason holds, ``low`` otherwise. ``risk_score`` is ``1 - prod(1 - weight)``
over the reasons that hold (0 with none).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lms_activity_pipeline.domain.event_types import EventType

RULES_VERSION = "1"
RULES_MODEL = f"rules-{RULES_VERSION}"

INACTIVE = "inactive"
FAILED_IN_ROW = "failed_in_row"
UNPASSED_EXAM = "unpassed_exam"
STALLED_CONTENT = "stalled_content"
DECLINING_SCORES = "declining_scores"
#: The reason codes, in the order reasons are listed.
REASON_CODES = (INACTIVE, FAILED_IN_ROW, UNPASSED_EXAM, STALLED_CONTENT, DECLINING_SCORES)
#: How much each reason adds to ``risk_score``.
WEIGHTS = {INACTIVE: 0.6, FAILED_IN_ROW: 0.4, UNPASSED_EXAM: 0.25, STALLED_CONTENT: 0.15, DECLINING_SCORES: 0.25}

HIGH, MEDIUM, LOW = "high", "medium", "low"
LEVELS = (HIGH, MEDIUM, LOW)
#: ``--level medium`` means medium and worse.
LEVEL_RANK = {HIGH: 2, MEDIUM: 1, LOW: 0}

WATCHABLE = ("video", "audio")
RESULT_TYPES = (EventType.EXAM_PASSED.value, EventType.EXAM_FAILED.value)
EXAM_TYPES = (EventType.EXAM_STARTED.value, EventType.EXAM_COMPLETED.value, *RESULT_TYPES)

RISK_EVENT_COLUMNS = [
    "event_id",
    "student_id",
    "student_username",
    "mentor_id",
    "course_id",
    "course_title",
    "activity_id",
    "activity_title",
    "event_type",
    "timestamp",
    "percentage",
    "content_type",
]

RISK_COLUMNS = [
    "student_id",
    "course_id",
    "as_of",
    "risk_level",
    "risk_score",
    "reasons",
    "model",
    "student_username",
    "course_title",
    "mentor_id",
    "last_event_at",
    "days_inactive",
    "unpassed_exams",
    "failed_in_row",
    "stalled_contents",
    "declining_scores",
    "streak_days",
    "on_track",
]


@dataclass(frozen=True)
class RiskThresholds:
    """When each reason holds. ``horizon_days``: how long after their last event a pair is still assessed."""

    inactive_days: int = 7
    failed_in_row: int = 2
    unpassed_exams: int = 1
    stalled_days: int = 7
    declining_attempts: int = 3
    streak_days: int = 3
    horizon_days: int = 60

    def __post_init__(self) -> None:
        for name in ("inactive_days", "failed_in_row", "unpassed_exams", "stalled_days", "streak_days"):
            if getattr(self, name) < 1:
                raise ValueError(f"risk threshold {name} must be at least 1, got {getattr(self, name)}")
        if self.declining_attempts < 2:
            raise ValueError(f"risk threshold declining_attempts must be at least 2, got {self.declining_attempts}")
        if self.horizon_days <= max(self.inactive_days, self.stalled_days):
            raise ValueError("risk horizon_days must be longer than inactive_days and stalled_days")


@dataclass(frozen=True)
class Names:
    """Display names: ``students`` (student_id -> username), ``courses`` (course_id -> title) and
    ``activities`` (``(kind, activity_id)`` -> title, kind ``exam`` or ``content``: the ids are the LMS's
    ``Exams.id`` and ``Contents.id``, which overlap).

    Read apart from the events (a day reads millions of events; their text columns would dominate)."""

    students: pd.Series
    courses: pd.Series
    activities: pd.Series

    @classmethod
    def from_events(cls, events: pd.DataFrame) -> Names:
        """The names the events carry (the latest of each)."""
        ordered = events.sort_values("timestamp", kind="mergesort")
        ordered = ordered.assign(kind=activity_kind(ordered))

        def latest(keys: list[str], value: str) -> pd.Series:
            return ordered.drop_duplicates(keys, keep="last").set_index(keys)[value]

        return cls(
            latest(["student_id"], "student_username").rename_axis("student_id"),
            latest(["course_id"], "course_title").rename_axis("course_id"),
            latest(["kind", "activity_id"], "activity_title"),
        )

    def activity(self, kind: str, activity_ids: pd.Series) -> np.ndarray:
        """Titles of ``activity_ids`` of one kind (missing: None)."""
        index = pd.MultiIndex.from_arrays([[kind] * len(activity_ids), activity_ids.astype("int64").to_numpy()])
        return self.activities.reindex(index).astype(object).where(lambda v: v.notna(), None).to_numpy()


def activity_kind(events: pd.DataFrame) -> np.ndarray:
    """``exam`` or ``content`` per event, from its type."""
    return np.where(events["event_type"].astype(str).str.startswith("exam"), "exam", "content")


def empty_risk() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in RISK_COLUMNS})


def assess_risk(
    events: pd.DataFrame,
    passed: pd.DataFrame,
    as_of: dt.date,
    cutoff: dt.datetime,
    timezone: str,
    thresholds: RiskThresholds = RiskThresholds(),
    names: Names | None = None,
) -> pd.DataFrame:
    """One row of :data:`RISK_COLUMNS` per (student, course) with an event in the horizon before ``cutoff``.

    Rows are ordered by ``(student_id, course_id)``; ``reasons`` is a list of ``{code, detail, value,
    threshold}`` dicts (:data:`REASON_CODES` order). Events at or after ``cutoff`` are ignored. ``names``
    defaults to the names the events carry (``student_username``, ``course_title``, ``activity_title``).
    """
    end = pd.Timestamp(cutoff).tz_convert("UTC")
    frame = events[
        (events["timestamp"] < end) & (events["timestamp"] >= end - pd.Timedelta(days=thresholds.horizon_days))
    ]
    if frame.empty:
        return empty_risk()
    names = names if names is not None else Names.from_events(frame)
    frame = frame.sort_values(["timestamp", "event_id"], kind="mergesort").reset_index(drop=True)
    keys = ["student_id", "course_id"]
    pairs = frame.groupby(keys, sort=True).agg(mentor_id=("mentor_id", "last"), last_event_at=("timestamp", "max"))
    pairs["student_username"] = names.students.reindex(pairs.index.get_level_values(0).to_numpy()).to_numpy()
    pairs["course_title"] = names.courses.reindex(pairs.index.get_level_values(1).to_numpy()).to_numpy()
    pairs["days_inactive"] = ((end - pairs["last_event_at"]).dt.total_seconds() / 86400).round(2)

    pairs = pairs.join(_exam_state(frame, passed, names)).join(_stalled(frame, end, thresholds, names))
    pairs = pairs.join(_declining(frame, thresholds)).join(_streak(frame, as_of, timezone))
    for column in ("unpassed_exams", "failed_in_row", "stalled_contents", "streak_days", "open_exams"):
        pairs[column] = pairs[column].fillna(0).astype("int64")
    pairs["declining_scores"] = pairs["declining_scores"].fillna(False).astype(bool)
    for column in ("failed_exam_title", "unpassed_title", "stalled_title", "scores"):
        pairs[column] = pairs[column].astype(object).where(pairs[column].notna(), None)

    holds = {
        INACTIVE: (pairs["days_inactive"] >= thresholds.inactive_days) & (pairs["open_exams"] > 0),
        FAILED_IN_ROW: pairs["failed_in_row"] >= thresholds.failed_in_row,
        UNPASSED_EXAM: pairs["unpassed_exams"] >= thresholds.unpassed_exams,
        STALLED_CONTENT: pairs["stalled_contents"] > 0,
        DECLINING_SCORES: pairs["declining_scores"],
    }
    others = sum(holds[code].astype(int) for code in REASON_CODES if code != INACTIVE)
    pairs["risk_level"] = np.select([holds[INACTIVE] | (others >= 2), others == 1], [HIGH, MEDIUM], LOW)
    keep = np.ones(len(pairs))
    for code in REASON_CODES:
        keep *= np.where(holds[code], 1 - WEIGHTS[code], 1.0)
    pairs["risk_score"] = np.round(1 - keep, 4)
    pairs["reasons"] = pd.Series(_reasons(pairs, holds, thresholds), index=pairs.index, dtype=object)
    pairs["on_track"] = (pairs["risk_level"] == LOW) & (pairs["streak_days"] >= thresholds.streak_days)
    pairs["as_of"] = as_of
    pairs["model"] = RULES_MODEL
    out = pairs.reset_index()
    out["mentor_id"] = out["mentor_id"].astype("Int64")
    return out[RISK_COLUMNS]


def _exam_state(frame: pd.DataFrame, passed: pd.DataFrame, names: Names) -> pd.DataFrame:
    """Per pair: exams of the course the student took and has not passed (``open_exams``), of those the
    ones failed (``unpassed_exams``), the longest current run of failures on one exam (``failed_in_row``)."""
    keys = ["student_id", "course_id"]
    known = passed.dropna(subset=["student_id", "activity_id"])
    passed_keys = {(int(s), int(a)) for s, a in zip(known["student_id"], known["activity_id"], strict=True)}
    pairs = frame[keys].drop_duplicates()
    taken = frame[frame["event_type"].isin(EXAM_TYPES)][[*keys, "activity_id"]].drop_duplicates()
    open_ = taken[~_member(taken, "student_id", "activity_id", passed_keys)]
    open_counts = open_.groupby(keys).size().rename("open_exams")

    results = frame[frame["event_type"].isin(RESULT_TYPES)][[*keys, "activity_id", "event_type"]]
    failed = results["event_type"] == EventType.EXAM_FAILED.value
    by_exam = [*keys, "activity_id"]
    # Run of failures since the exam's last pass: count failures after the last passed result.
    passes_so_far = (~failed).astype(int).groupby([results[k] for k in by_exam]).cumsum()
    total_passes = passes_so_far.groupby([results[k] for k in by_exam]).transform("max")
    trailing = results.assign(_fail=(failed & (passes_so_far == total_passes)).astype(int))
    per_exam = trailing.groupby(by_exam).agg(run=("_fail", "sum")).reset_index()
    per_exam["title"] = names.activity("exam", per_exam["activity_id"])
    per_exam["ever_passed"] = _member(per_exam, "student_id", "activity_id", passed_keys)
    per_exam["unpassed"] = (per_exam["run"] > 0) & ~per_exam["ever_passed"]
    worst = per_exam.sort_values(["run", "activity_id"], ascending=[False, True]).groupby(keys).first()
    unpassed = per_exam[per_exam["unpassed"]]
    out = pd.DataFrame(index=pd.MultiIndex.from_frame(pairs)).sort_index()
    out = out.join(open_counts)
    out["failed_in_row"] = worst["run"]
    out["failed_exam_title"] = worst["title"]
    out["unpassed_exams"] = unpassed.groupby(keys).size()
    out["unpassed_title"] = unpassed.sort_values("activity_id").groupby(keys)["title"].first()
    return out


def _member(frame: pd.DataFrame, a: str, b: str, keys: set[tuple[int, int]]) -> np.ndarray:
    """Which rows' ``(frame[a], frame[b])`` are in ``keys`` (a boolean array, also for no rows)."""
    pairs = zip(frame[a].astype("int64"), frame[b].astype("int64"), strict=True)
    return np.fromiter(((int(x), int(y)) in keys for x, y in pairs), dtype=bool, count=len(frame))


def _stalled(frame: pd.DataFrame, end: pd.Timestamp, thresholds: RiskThresholds, names: Names) -> pd.DataFrame:
    """Per pair: video/audio started at least ``stalled_days`` ago and not watched or completed since."""
    keys = ["student_id", "course_id"]
    media = frame[frame["content_type"].isin(WATCHABLE)]
    started = media[media["event_type"] == EventType.CONTENT_STARTED.value]
    done = media[media["event_type"].isin((EventType.CONTENT_WATCHED.value, EventType.CONTENT_COMPLETED.value))]
    first = started.groupby([*keys, "activity_id"]).agg(started=("timestamp", "min"))
    finished = {(int(s), int(a)) for s, a in zip(done["student_id"], done["activity_id"], strict=True)}
    first = first.reset_index()
    first = first[~_member(first, "student_id", "activity_id", finished)]
    first = first[first["started"] <= end - pd.Timedelta(days=thresholds.stalled_days)]
    first = first.assign(title=names.activity("content", first["activity_id"]))
    grouped = first.sort_values("activity_id").groupby(keys)
    return pd.DataFrame({"stalled_contents": grouped.size(), "stalled_title": grouped["title"].first()})


def _declining(frame: pd.DataFrame, thresholds: RiskThresholds) -> pd.DataFrame:
    """Per pair: do the last ``declining_attempts`` graded results in the course strictly fall? (and,
    where they do, those scores)."""
    keys = ["student_id", "course_id"]
    n = thresholds.declining_attempts
    graded = frame[frame["event_type"].isin(RESULT_TYPES) & frame["percentage"].notna()]
    last = graded.groupby(keys).tail(n)[[*keys, "percentage"]]
    last = last.assign(_fell=last.groupby(keys)["percentage"].shift() > last["percentage"])
    summary = last.groupby(keys).agg(results=("percentage", "size"), falls=("_fell", "sum"))
    falling = (summary["results"] == n) & (summary["falls"] == n - 1)
    chosen = last[last.set_index(keys).index.isin(falling[falling].index)]
    scores = chosen.groupby(keys)["percentage"].agg(list)
    return pd.DataFrame({"declining_scores": falling, "scores": scores})


def _streak(frame: pd.DataFrame, as_of: dt.date, timezone: str) -> pd.Series:
    """Per pair: consecutive days with an event in the course, ending on ``as_of`` (0: none that day)."""
    keys = ["student_id", "course_id"]
    local = frame["timestamp"].dt.tz_convert(timezone).dt.tz_localize(None).dt.floor("D")
    back = (pd.Timestamp(as_of) - local) // pd.Timedelta(days=1)
    days = pd.DataFrame({"student_id": frame["student_id"], "course_id": frame["course_id"], "_back": back})
    days = days[days["_back"] >= 0].drop_duplicates().sort_values([*keys, "_back"])
    # A streak of k: the pair's days back from as_of are exactly 0, 1, ..., k-1 at the start of its list.
    days["_rank"] = days.groupby(keys).cumcount()
    unbroken = days[days["_back"] == days["_rank"]]
    return unbroken.groupby(keys).size().rename("streak_days")


def _reasons(pairs: pd.DataFrame, holds: dict[str, pd.Series], t: RiskThresholds) -> list[list[dict[str, Any]]]:
    """The reasons that hold per row, each ``{code, detail, value, threshold}`` in plain words."""
    masks = {code: holds[code].to_numpy() for code in REASON_CODES}
    any_reason = np.logical_or.reduce([masks[code] for code in REASON_CODES])
    out: list[list[dict[str, Any]]] = [[] for _ in range(len(pairs))]
    flagged = np.flatnonzero(any_reason)
    for i, row in zip(flagged, pairs.iloc[flagged].to_dict("records"), strict=True):
        reasons: list[dict[str, Any]] = []
        if masks[INACTIVE][i]:
            days = float(row["days_inactive"])
            reasons.append(
                _reason(
                    INACTIVE,
                    f"no activity in the course for {int(days)} days, with an exam not passed yet",
                    days,
                    t.inactive_days,
                )
            )
        if masks[FAILED_IN_ROW][i]:
            n = int(row["failed_in_row"])
            reasons.append(
                _reason(
                    FAILED_IN_ROW,
                    f"failed {_title(row['failed_exam_title'], 'an exam')} {n} times in a row",
                    n,
                    t.failed_in_row,
                )
            )
        if masks[UNPASSED_EXAM][i]:
            n = int(row["unpassed_exams"])
            what = _title(row["unpassed_title"], "an exam") + (f" and {n - 1} more exam(s)" if n > 1 else "")
            reasons.append(_reason(UNPASSED_EXAM, f"has failed {what} and not passed yet", n, t.unpassed_exams))
        if masks[STALLED_CONTENT][i]:
            n = int(row["stalled_contents"])
            what = _title(row["stalled_title"], "a video") + (f" and {n - 1} more" if n > 1 else "")
            reasons.append(
                _reason(STALLED_CONTENT, f"started {what} over {t.stalled_days} days ago and has not finished it", n, 1)
            )
        if masks[DECLINING_SCORES][i]:
            scores = [round(float(s)) for s in row["scores"]]
            shown = " → ".join(f"{s}%" for s in scores)
            reasons.append(
                _reason(
                    DECLINING_SCORES,
                    f"the last {len(scores)} exam scores fell: {shown}",
                    scores[-1],
                    t.declining_attempts,
                )
            )
        out[i] = reasons
    return out


def _title(value: object, fallback: str) -> str:
    """An activity's title, or ``fallback`` when the events carry none."""
    return fallback if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _reason(code: str, detail: str, value: float, threshold: float) -> dict[str, Any]:
    return {"code": code, "detail": detail, "value": value, "threshold": threshold}


def levels_from(level: str) -> tuple[str, ...]:
    """``level`` and the worse levels: ``"medium"`` -> ``("high", "medium")``."""
    if level not in LEVEL_RANK:
        raise ValueError(f"unknown risk level {level!r}: use one of {', '.join(LEVELS)}")
    return tuple(x for x in LEVELS if LEVEL_RANK[x] >= LEVEL_RANK[level])


def at_or_above(levels: pd.Series, level: str) -> pd.Series:
    """Rows whose ``risk_level`` is ``level`` or worse."""
    if level not in LEVEL_RANK:
        raise ValueError(f"unknown risk level {level!r}: use one of {', '.join(LEVELS)}")
    return levels.map(LEVEL_RANK) >= LEVEL_RANK[level]
