"""The learned at-risk model (``LMS_RISK_MODEL=learned``): features, label, time-based split, logistic regression.

Pure pandas/numpy (scikit-learn only to fit). Per (student, course, day):

- features: the rules' signals of :func:`lms_activity_pipeline.domain.risk.assess_risk` at the day's
  cut-off (:data:`FEATURES`) plus event counts of the pair over the last 7 days and the horizon;
- label: 1 when the pair has no event in the :data:`LABEL_DAYS` days after the cut-off and no
  ``exam_passed`` event in the course up to then (the student left without passing), else 0; a mentor's
  feedback on the day overrides it (👍 ``useful`` → 1, 👎 ``wrongly_flagged`` → 0);
- split: the earlier training days fit, the later ones validate (no shuffling across time);
- model: standardised features, ``LogisticRegression(class_weight="balanced")``. Stored as plain numbers
  (scaler mean/scale, coefficients, intercept), so scoring needs no scikit-learn and a version always
  scores the same; the version is a hash of those numbers.

Levels: ``high`` when the probability is at least :data:`HIGH_AT`, ``medium`` from :data:`MEDIUM_AT`,
``low`` below. Reasons: the features that push the probability up most (at most :data:`MAX_REASONS`), in
plain words, under the rules' reason codes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from lms_activity_pipeline.domain import risk
from lms_activity_pipeline.domain.event_types import EventType

LABEL_DAYS = 14
HIGH_AT = 0.75
MEDIUM_AT = 0.5
MAX_REASONS = 2

#: The model's inputs, in order.
FEATURES = (
    "days_inactive",
    "unpassed_exams",
    "failed_in_row",
    "stalled_contents",
    "declining_scores",
    "streak_days",
    "events_7d",
    "events_horizon",
)
#: Features that are reasons when they push the risk up, with their reason code and plain words.
REASON_OF = {
    "days_inactive": (risk.INACTIVE, "no activity in the course for {v:.0f} days"),
    "failed_in_row": (risk.FAILED_IN_ROW, "failed an exam {v:.0f} times in a row"),
    "unpassed_exams": (risk.UNPASSED_EXAM, "{v:.0f} exam(s) failed and not passed yet"),
    "stalled_contents": (risk.STALLED_CONTENT, "{v:.0f} video(s) started and not finished"),
    "declining_scores": (risk.DECLINING_SCORES, "the last exam scores fell"),
}
FEEDBACK_LABELS = {"useful": 1, "wrongly_flagged": 0}


def features_of(rows: pd.DataFrame, events: pd.DataFrame, cutoff: dt.datetime) -> pd.DataFrame:
    """:data:`FEATURES` per row of ``rows`` (``assess_risk`` output), counting ``events`` before ``cutoff``."""
    end = pd.Timestamp(cutoff).tz_convert("UTC")
    keys = ["student_id", "course_id"]
    before = events[events["timestamp"] < end]
    week = before[before["timestamp"] >= end - pd.Timedelta(days=7)]
    index = pd.MultiIndex.from_frame(rows[keys].astype("int64"))
    out = pd.DataFrame(index=index)
    out["events_7d"] = week.groupby(keys).size().reindex(index).fillna(0).to_numpy()
    out["events_horizon"] = before.groupby(keys).size().reindex(index).fillna(0).to_numpy()
    for name in FEATURES[:6]:
        out[name] = pd.to_numeric(rows[name].to_numpy(), errors="coerce")
    return out[list(FEATURES)].astype("float64").fillna(0.0).reset_index()


def labels_of(rows: pd.DataFrame, events: pd.DataFrame, cutoff: dt.datetime) -> np.ndarray:
    """1 per row whose pair has no event in ``LABEL_DAYS`` days after ``cutoff`` and passed no exam of the
    course by then (``events``: the pair's events up to ``cutoff + LABEL_DAYS``)."""
    end = pd.Timestamp(cutoff).tz_convert("UTC")
    later = events[(events["timestamp"] >= end) & (events["timestamp"] < end + pd.Timedelta(days=LABEL_DAYS))]
    passed = events[
        (events["event_type"].astype(str) == EventType.EXAM_PASSED.value)
        & (events["timestamp"] < end + pd.Timedelta(days=LABEL_DAYS))
    ]
    keys = ["student_id", "course_id"]
    index = pd.MultiIndex.from_frame(rows[keys].astype("int64"))
    active = index.isin(pd.MultiIndex.from_frame(later[keys].astype("int64").drop_duplicates()))
    done = index.isin(pd.MultiIndex.from_frame(passed[keys].astype("int64").drop_duplicates()))
    return (~active & ~done).astype("int64")


def apply_feedback(samples: pd.DataFrame, feedback: pd.DataFrame) -> pd.DataFrame:
    """``samples`` (``student_id, course_id, as_of, label``) with mentors' labels where they reacted (the
    latest reaction per row wins)."""
    if feedback.empty:
        return samples
    fb = feedback[feedback["label"].isin(FEEDBACK_LABELS)].sort_values("reacted_at", kind="mergesort")
    fb = fb.assign(as_of=pd.to_datetime(fb["as_of"]).dt.date, _label=fb["label"].map(FEEDBACK_LABELS))
    fb = fb.drop_duplicates(["student_id", "course_id", "as_of"], keep="last")
    keys = ["student_id", "course_id", "as_of"]
    merged = samples.merge(fb[[*keys, "_label"]], on=keys, how="left")
    merged["label"] = merged["_label"].fillna(merged["label"]).astype("int64")
    return merged.drop(columns="_label")


@dataclass(frozen=True)
class RiskModel:
    """A fitted model as plain numbers; ``version`` is a hash of them."""

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float
    trained_at: dt.datetime
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        params = {"features": self.features, "mean": self.mean, "scale": self.scale, "coef": self.coef}
        text = json.dumps({**params, "intercept": self.intercept}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def name(self) -> str:
        return f"learned-{self.version}"

    def params(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
            "high_at": HIGH_AT,
            "medium_at": MEDIUM_AT,
        }

    @classmethod
    def from_params(
        cls, features: list[str], params: dict[str, Any], trained_at: dt.datetime, metrics: dict[str, Any]
    ) -> RiskModel:
        return cls(
            tuple(features),
            tuple(float(x) for x in params["mean"]),
            tuple(float(x) for x in params["scale"]),
            tuple(float(x) for x in params["coef"]),
            float(params["intercept"]),
            trained_at,
            metrics,
        )

    def contributions(self, x: pd.DataFrame) -> np.ndarray:
        """Per row and feature: ``coef * standardised value`` (what each feature adds to the log-odds)."""
        values = x[list(self.features)].to_numpy(dtype="float64")
        return (values - np.array(self.mean)) / np.array(self.scale) * np.array(self.coef)

    def probability(self, x: pd.DataFrame) -> np.ndarray:
        if x.empty:
            return np.zeros(0)
        z = self.contributions(x).sum(axis=1) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))


def fit(samples: pd.DataFrame, trained_at: dt.datetime, validate_share: float = 0.3) -> RiskModel:
    """Fit on the earlier days of ``samples`` (:data:`FEATURES`, ``as_of``, ``label``, ``risk_level``),
    validate on the later ``validate_share`` of the days; metrics include the rules' on the same split."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
    from sklearn.metrics import average_precision_score, precision_score, recall_score  # type: ignore[import-untyped]
    from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

    days = sorted(samples["as_of"].unique())
    if len(days) < 2:
        raise ValueError(f"the learned risk model needs at least 2 training days, got {len(days)}")
    split = days[min(len(days) - 1, max(1, round(len(days) * (1 - validate_share))))]
    train, valid = samples[samples["as_of"] < split], samples[samples["as_of"] >= split]
    if train["label"].nunique() < 2:
        raise ValueError("the learned risk model needs both at-risk and not-at-risk examples in its training days")
    x = train[list(FEATURES)].to_numpy(dtype="float64")
    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    clf = LogisticRegression(class_weight="balanced", max_iter=1000).fit((x - scaler.mean_) / scale, train["label"])
    model = RiskModel(
        FEATURES,
        tuple(round(float(v), 10) for v in scaler.mean_),
        tuple(round(float(v), 10) for v in scale),
        tuple(round(float(v), 10) for v in clf.coef_[0]),
        round(float(clf.intercept_[0]), 10),
        trained_at,
    )
    y = valid["label"].to_numpy()
    p = model.probability(valid)
    flagged = p >= MEDIUM_AT
    rules = (valid["risk_level"] != risk.LOW).to_numpy()
    metrics = {
        "train_days": f"{days[0]} .. {days[days.index(split) - 1]}",
        "validation_days": f"{split} .. {days[-1]}",
        "train_rows": len(train),
        "validation_rows": len(valid),
        "validation_positives": int(y.sum()),
        "precision": round(float(precision_score(y, flagged, zero_division=0)), 4),
        "recall": round(float(recall_score(y, flagged, zero_division=0)), 4),
        "pr_auc": round(float(average_precision_score(y, p)), 4) if 0 < y.sum() < len(y) else None,
        "rules_precision": round(float(precision_score(y, rules, zero_division=0)), 4),
        "rules_recall": round(float(recall_score(y, rules, zero_division=0)), 4),
    }
    return RiskModel(model.features, model.mean, model.scale, model.coef, model.intercept, trained_at, metrics)


def score(rows: pd.DataFrame, x: pd.DataFrame, model: RiskModel) -> pd.DataFrame:
    """``rows`` (``assess_risk`` output) re-levelled by ``model``: ``risk_score`` the probability, levels
    from :data:`HIGH_AT`/:data:`MEDIUM_AT`, ``reasons`` the top contributing features, ``model`` its name."""
    out = rows.copy()
    if out.empty:
        return out
    p = model.probability(x)
    contrib = model.contributions(x)
    out["risk_score"] = np.round(p, 4)
    out["risk_level"] = np.select([p >= HIGH_AT, p >= MEDIUM_AT], [risk.HIGH, risk.MEDIUM], risk.LOW)
    out["model"] = model.name
    out["on_track"] = (out["risk_level"] == risk.LOW) & rows["on_track"].astype(bool)
    mapped = [i for i, f in enumerate(model.features) if f in REASON_OF]
    values = x[list(model.features)].to_numpy(dtype="float64")
    reasons: list[list[dict[str, Any]]] = []
    for r in range(len(out)):
        order = sorted(mapped, key=lambda i: -contrib[r, i])
        chosen = [i for i in order if contrib[r, i] > 0 and values[r, i] > 0][:MAX_REASONS]
        if not chosen and out["risk_level"].iat[r] != risk.LOW:
            chosen = order[:1]  # a flag always says why: the feature that adds most
        reasons.append([_reason(model.features[i], values[r, i], model.mean[i]) for i in chosen])
    out["reasons"] = pd.Series(reasons, index=out.index, dtype=object)
    return out


def _reason(feature: str, value: float, mean: float) -> dict[str, Any]:
    """A reason; ``threshold`` is the feature's training mean (above it, it adds to the risk)."""
    code, words = REASON_OF[feature]
    return {"code": code, "detail": words.format(v=value), "value": round(value, 2), "threshold": round(mean, 2)}
