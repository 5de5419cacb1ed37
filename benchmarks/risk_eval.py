"""Students at risk on a large demo: how good the rules are, and how long a day of ``student_risk`` takes.

    python benchmarks/risk_eval.py                       # 20,000 students, 45 days, PostgreSQL
    python benchmarks/risk_eval.py --url sqlite:////tmp/bench_risk.sqlite3 --students 2000

Builds the demo LMS's rows in memory (with its struggling cohort), classifies them into events with the
pipeline's own classification, bulk-loads ``lms_activity_events`` of an empty warehouse, then for each
evaluation day (``--eval-days`` days, ending ``--horizon`` days before the demo's end, so the outcome is
known) times ``compute_student_risk`` for that day, and scores its flags against what happened next:

    label = the student had no event in the course in the ``--horizon`` days after the day, and had not
            passed every exam of the course they had taken (computable from history).

Prints the timing per day and precision/recall of ``high`` and of ``high + medium`` flags, for the rules
and for the learned model (``LMS_RISK_MODEL=learned``), trained first on the history before the first
evaluated day (``--no-learned``: the rules only).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEFAULT_SERVER, database_url, ensure_database
from lms_activity_pipeline import db
from lms_activity_pipeline.domain import classification as cls
from lms_activity_pipeline.domain import cleaning
from lms_activity_pipeline.domain.risk import RiskThresholds
from lms_activity_pipeline.domain.risk_model import RiskModel
from lms_activity_pipeline.ingest.risk import compute_student_risk, train_risk_model
from lms_activity_pipeline.lms.demo import build_demo_frames
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.engine import physical_schema
from lms_activity_pipeline.warehouse.store import Warehouse

SCHEMA = "lms_activity"
NOW = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)


def demo_events(students: int, days: int, seed: int) -> pd.DataFrame:
    """The demo LMS's events, classified as the ingest would (all seven types, mentors attached)."""
    frames = build_demo_frames(students=students, days=days, seed=seed, now=NOW)
    dims = cls.Dimensions(
        users=cleaning.clean_dimension("Users", frames["Users"], cleaning.USER_COLUMNS)[0],
        courses=cleaning.clean_dimension("Courses", frames["Courses"], cleaning.COURSE_COLUMNS)[0],
        exams=cleaning.clean_dimension("Exams", frames["Exams"], cleaning.EXAM_COLUMNS)[0],
        contents=cleaning.clean_dimension("Contents", frames["Contents"], cleaning.CONTENT_COLUMNS)[0],
        assignments=cleaning.clean_dimension(
            "MentorAssignments", frames["MentorAssignments"], cleaning.ASSIGNMENT_COLUMNS
        )[0],
    )
    exams, _ = cleaning.clean_exam_attempts(frames["Attempts"].astype({"status": str}))
    contents, _ = cleaning.clean_content_attempts(frames["ContentAttempts"].astype({"status": str}))
    numbers = cls.attempt_numbers(exams[["id", "user_id", "exam_id", "started_at"]])
    exam_events, _ = cls.classify_exam_attempts(exams, dims, numbers)
    content_events, _ = cls.classify_content_attempts(contents, dims)
    events = pd.concat([exam_events, content_events], ignore_index=True)
    return events.drop(columns=["time_is_fallback"], errors="ignore")


def load(engine: sa.Engine, events: pd.DataFrame) -> None:
    """Bulk-load the events (``COPY`` on PostgreSQL), metadata as JSON text."""
    columns = [c for c in events.columns if c in wh.lms_activity_events.c]
    target = sa.Table(
        wh.lms_activity_events.name,
        sa.MetaData(schema=physical_schema(engine, SCHEMA)),
        *[sa.Column(c, sa.Text if c == "activity_metadata" else wh.lms_activity_events.c[c].type) for c in columns],
    )
    with engine.begin() as conn:
        for i in range(0, len(events), 200_000):
            db.bulk_insert(conn, target, events.iloc[i : i + 200_000][columns])
        if db.is_postgres(conn):
            conn.execute(sa.text(f"ANALYZE {SCHEMA}.lms_activity_events"))


def labels(events: pd.DataFrame, day_end: pd.Timestamp, horizon: int) -> pd.DataFrame:
    """Per (student, course) active before ``day_end``: silent in the next ``horizon`` days and not done."""
    keys = ["student_id", "course_id"]
    before = events[events["timestamp"] < day_end]
    after = events[(events["timestamp"] >= day_end) & (events["timestamp"] < day_end + pd.Timedelta(days=horizon))]
    pairs = before[keys].drop_duplicates()
    active_after = set(map(tuple, after[keys].drop_duplicates().to_numpy().tolist()))
    taken = before[before["event_type"] == "exam_started"].groupby(keys)["activity_id"].nunique()
    passed = before[before["event_type"] == "exam_passed"].groupby(keys)["activity_id"].nunique()
    done = (passed.reindex(taken.index, fill_value=0) >= taken).rename("done")
    pairs = pairs.join(done, on=keys)
    pairs["done"] = pairs["done"].fillna(False).astype(bool)
    silent = [(int(s), int(c)) not in active_after for s, c in pairs[keys].itertuples(index=False)]
    pairs["label"] = pd.Series(silent, index=pairs.index) & ~pairs["done"]
    return pairs


def score(flags: pd.Series, truth: pd.Series) -> tuple[float, float, int]:
    """Precision, recall and the number flagged."""
    tp = int((flags & truth).sum())
    flagged, positives = int(flags.sum()), int(truth.sum())
    return (tp / flagged if flagged else 0.0), (tp / positives if positives else 0.0), flagged


def evaluate(
    store: Warehouse,
    events: pd.DataFrame,
    args: argparse.Namespace,
    first: dt.date,
    label: str,
    model: RiskModel | None,
) -> None:
    """Time and score ``student_risk`` of the evaluated days by the rules (``model`` None) or ``model``."""
    totals = {"high": [0, 0, 0], "flagged": [0, 0, 0]}
    for offset in range(args.eval_days):
        day = first + dt.timedelta(days=offset)
        start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        report = compute_student_risk(store, start, start + dt.timedelta(days=1), "UTC", RiskThresholds(), model)
        rows = store.student_risk(as_of=day)
        truth = labels(events, pd.Timestamp(start + dt.timedelta(days=1)), args.horizon)
        joined = truth.merge(
            rows[["student_id", "course_id", "risk_level"]], on=["student_id", "course_id"], how="left"
        )
        high = joined["risk_level"] == "high"
        flagged = joined["risk_level"].isin(["high", "medium"])
        ph, rh, _ = score(high, joined["label"])
        pf, rf, _ = score(flagged, joined["label"])
        print(
            f"{label} {day}: student_risk in {report.seconds:.1f} s for {len(rows):,} (student, course) rows "
            f"({report.levels['high']:,} high, {report.levels['medium']:,} medium); "
            f"{int(joined['label'].sum()):,} silent-and-not-passed in the next {args.horizon} days; "
            f"high: precision {ph:.2f} recall {rh:.2f}; high+medium: precision {pf:.2f} recall {rf:.2f}"
        )
        for name, mask in (("high", high), ("flagged", flagged)):
            totals[name][0] += int((mask & joined["label"]).sum())
            totals[name][1] += int(mask.sum())
            totals[name][2] += int(joined["label"].sum())
    for name, (tp, flagged_n, positives) in totals.items():
        shown = "high" if name == "high" else "high+medium"
        print(
            f"{label}, all evaluated days, {shown}: precision {tp / max(flagged_n, 1):.2f}, "
            f"recall {tp / max(positives, 1):.2f} ({tp:,} of {flagged_n:,} flags right, {positives:,} positives)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help=f"warehouse URL (default: database bench_risk on {DEFAULT_SERVER})")
    parser.add_argument("--students", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=45)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--horizon", type=int, default=14, help="days after the evaluated day that decide the label")
    parser.add_argument("--eval-days", type=int, default=3, help="evaluated days (each one timed)")
    parser.add_argument("--reuse", action="store_true", help="keep the events a previous run loaded (same sizes)")
    parser.add_argument("--no-learned", action="store_true", help="skip the learned model")
    args = parser.parse_args(argv)
    url = args.url or ensure_database(database_url(DEFAULT_SERVER, "bench_risk"), recreate=not args.reuse)
    if url.startswith("sqlite:///") and not args.reuse:
        Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)

    began = time.perf_counter()
    events = demo_events(args.students, args.days, args.seed)
    print(
        f"demo: {args.students:,} students, {args.days} days, {len(events):,} events in {time.perf_counter() - began:.1f} s"
    )
    store = Warehouse(url, SCHEMA)
    store.migrate()
    if not args.reuse:
        began = time.perf_counter()
        load(store.engine, events)
        print(f"loaded lms_activity_events in {time.perf_counter() - began:.1f} s ({store.engine.dialect.name})")

    last = (NOW - dt.timedelta(days=args.horizon + 1)).date()
    first = last - dt.timedelta(days=args.eval_days - 1)
    models: list[tuple[str, RiskModel | None]] = [("rules", None)]
    if not args.no_learned:
        began = time.perf_counter()
        until = dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC)
        model = train_risk_model(store, until, "UTC", RiskThresholds())
        m = model.metrics
        print(
            f"learned model {model.name} trained in {time.perf_counter() - began:.1f} s on {m['train_days']} "
            f"({m['train_rows']:,} rows), validated on {m['validation_days']} ({m['validation_rows']:,} rows): "
            f"precision {m['precision']:.2f} recall {m['recall']:.2f} PR-AUC {m['pr_auc']}; "
            f"rules on the same split: precision {m['rules_precision']:.2f} recall {m['rules_recall']:.2f}"
        )
        models.append(("learned", model))
    for label, model in models:
        evaluate(store, events, args, first, label, model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
