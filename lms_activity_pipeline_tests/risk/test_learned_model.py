"""``LMS_RISK_MODEL=learned``: trained on the demo's struggling cohort through real ingest and risk runs."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from lms_activity_pipeline import names
from lms_activity_pipeline.defs.resources import RiskSettings
from lms_activity_pipeline.defs.runs import run_student_risk
from lms_activity_pipeline.domain import risk, risk_model
from lms_activity_pipeline.lms.demo import generate_demo_lms
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.pipeline import Pipeline, checks, metadata

NOW = dt.datetime(2024, 6, 30, 23, 0, tzinfo=dt.UTC)
DAYS = 40
DAY = "2024-06-30"


def risk_of(pipe: Pipeline, day: str) -> pd.DataFrame:
    frame = pipe.table(wh.student_risk, ["as_of", "student_id", "course_id"])
    return frame[frame["as_of"].astype(str) == day].drop(columns="updated_at").reset_index(drop=True)


def test_learned_model_trains_scores_explains_and_reruns_the_same(backend: Backend) -> None:
    generate_demo_lms(backend.lms_url, students=120, days=DAYS, now=NOW)
    pipe = Pipeline(backend, resources={"risk": RiskSettings(model="learned")})
    pipe.ingest((NOW - dt.timedelta(days=DAYS)).date().isoformat(), DAY)

    result = run_student_risk(pipe.defs, pipe.instance, DAY)
    assert checks(result)[names.RISK_REASONS_CHECK].passed
    meta = metadata(result, names.STUDENT_RISK)
    version = meta["model_version"]
    assert meta["model"] == f"learned-{version}" and meta["model_trained_now"] is True
    assert meta["model_features"] == ", ".join(risk_model.FEATURES)
    positives, rows = int(meta["model_validation_positives"]), int(meta["model_validation_rows"])
    assert 0 < positives < rows
    # Better than chance: PR-AUC above the share of positives, and most of them found.
    assert meta["validation_pr_auc"] > positives / rows and meta["validation_recall"] >= 0.5
    assert {"validation_precision", "validation_rules_precision", "validation_rules_recall"} <= set(meta)

    day = risk_of(pipe, DAY)
    assert not day.empty and (day["model"] == f"learned-{version}").all()
    flagged = day[day["risk_level"] != "low"]
    assert not flagged.empty
    for reasons in flagged["reasons"]:
        assert reasons and {r["code"] for r in reasons} <= set(risk.REASON_CODES)
        assert all(r["detail"] for r in reasons)
    assert ((day["risk_score"] >= 0) & (day["risk_score"] <= 1)).all()
    assert pipe.count(wh.risk_models) == 1

    # Same version, same rows: the stored model is reused, not retrained.
    again = metadata(run_student_risk(pipe.defs, pipe.instance, DAY), names.STUDENT_RISK)
    assert again["model_version"] == version and again["model_trained_now"] is False
    assert again["rows_unchanged"] == len(day) and again["rows_inserted"] == 0
    pd.testing.assert_frame_equal(risk_of(pipe, DAY), day)
    assert pipe.count(wh.risk_models) == 1


def test_learned_model_without_history_fails_with_one_line(backend: Backend) -> None:
    generate_demo_lms(backend.lms_url, students=20, days=3, now=NOW)
    pipe = Pipeline(backend, resources={"risk": RiskSettings(model="learned")})
    pipe.ingest((NOW - dt.timedelta(days=3)).date().isoformat(), DAY)
    result = run_student_risk(pipe.defs, pipe.instance, DAY, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "LMS_RISK_MODEL=learned: no history to train the learned risk model on before" in (
        failure.step_failure_data.error.to_string()
    )
    assert pipe.count(wh.student_risk) == 0


def samples(n_days: int, per_day: int, seed: int) -> pd.DataFrame:
    """Pairs whose label follows inactivity and failures (with noise)."""
    rng = np.random.default_rng(seed)
    frames = []
    for d in range(n_days):
        x = pd.DataFrame({f: rng.poisson(1.0, per_day).astype(float) for f in risk_model.FEATURES})
        x["days_inactive"] = rng.uniform(0, 20, per_day)
        logit = 0.4 * (x["days_inactive"] - 10) + 0.8 * x["failed_in_row"] - 0.5 * x["events_7d"]
        x["label"] = (rng.random(per_day) < 1 / (1 + np.exp(-logit))).astype(int)
        x["risk_level"] = np.where(x["days_inactive"] >= 7, "high", "low")
        x["as_of"] = dt.date(2024, 1, 1) + dt.timedelta(days=d)
        x["student_id"], x["course_id"] = np.arange(per_day), 1
        frames.append(x)
    return pd.concat(frames, ignore_index=True)


@pytest.mark.unit
def test_fit_is_time_split_reproducible_and_scores_with_reasons() -> None:
    data = samples(10, 200, seed=1)
    at = dt.datetime(2024, 2, 1, tzinfo=dt.UTC)
    model = risk_model.fit(data, trained_at=at)
    assert model.metrics["validation_days"] == "2024-01-08 .. 2024-01-10"
    assert model.metrics["pr_auc"] > data["label"].mean() and model.metrics["recall"] > 0.5
    assert risk_model.fit(data, trained_at=at).version == model.version
    stored = risk_model.RiskModel.from_params(list(model.features), model.params(), at, model.metrics)
    assert stored.version == model.version

    rows = data.assign(on_track=False).head(50)
    scored = risk_model.score(rows, rows, model)
    assert (scored["model"] == model.name).all()
    flagged = scored[scored["risk_level"] != "low"]
    assert not flagged.empty and all(len(r) >= 1 for r in flagged["reasons"])
    top = scored.loc[scored["risk_score"].idxmax(), "reasons"][0]
    assert top["code"] == "inactive" and top["detail"].startswith("no activity in the course for")


@pytest.mark.unit
def test_feedback_overrides_the_label() -> None:
    data = samples(1, 3, seed=2).assign(label=[1, 0, 1])
    feedback = pd.DataFrame(
        {
            "student_id": [0, 1],
            "course_id": [1, 1],
            "as_of": [dt.date(2024, 1, 1)] * 2,
            "label": ["wrongly_flagged", "useful"],
            "reacted_at": [pd.Timestamp("2024-01-02", tz="UTC")] * 2,
        }
    )
    assert risk_model.apply_feedback(data, feedback)["label"].tolist() == [0, 1, 1]


def test_stored_model_round_trips_and_feedback_labels_are_read(backend: Backend) -> None:
    pipe = Pipeline(backend)
    store = pipe.warehouse
    assert store.risk_model() is None
    model = risk_model.fit(samples(10, 100, seed=3), trained_at=dt.datetime(2024, 2, 1, tzinfo=dt.UTC))
    store.save_risk_model(model)
    store.save_risk_model(model)  # the same version again: stored once
    loaded = store.risk_model()
    assert loaded is not None and loaded.version == model.version and loaded.metrics == model.metrics
    assert store.risk_model(model.version) == loaded and pipe.count(wh.risk_models) == 1

    pipe.execute(
        wh.risk_feedback.insert().values(
            message_id=9,
            mentor_id=5,
            student_id=0,
            course_id=1,
            label="wrongly_flagged",
            as_of=dt.date(2024, 1, 1),
            reacted_at=dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
        )
    )
    data = samples(1, 2, seed=4).assign(label=[1, 1])
    labelled = risk_model.apply_feedback(data, store.risk_feedback_labels())
    assert labelled["label"].tolist() == [0, 1]
