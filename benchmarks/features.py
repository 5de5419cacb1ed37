"""Speed of the feature tables and checks for one large partition, with a realistic history behind it.

    python benchmarks/features.py postgresql://postgres@127.0.0.1:5432/bench_features
    python benchmarks/features.py sqlite:////tmp/bench_features.sqlite3 --events-per-day 20000

Fills ``lms_activity_events`` of an empty warehouse with ``--days`` days of
``--events-per-day`` synthetic events (students, exams, retakes, content), then
times, for the last day: reading the window and its history, computing
``ai_ready_events``, writing it (first time, then unchanged), the daily
activity, and the window-scoped check queries. Prints one line per step.
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from lms_activity_pipeline import db
from lms_activity_pipeline.domain import features as feat
from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES
from lms_activity_pipeline.warehouse import features, quality
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.engine import open_warehouse, physical_schema

SCHEMA = "lms_activity"
START = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


def synthetic_events(days: int, per_day: int, students: int, seed: int = 1) -> pd.DataFrame:
    """Events spread uniformly over ``days``; a fifth are exam results, metadata as JSON text."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    types = rng.choice(np.array(ALL_EVENT_TYPES), n, p=[0.2, 0.15, 0.1, 0.1, 0.2, 0.1, 0.15])
    is_exam = np.char.startswith(types.astype(str), "exam")
    seconds = np.sort(rng.integers(0, days * 86400, n))
    frame = pd.DataFrame(
        {
            "event_key": [f"bench:{i}:{t}" for i, t in enumerate(types)],
            "event_type": types,
            "student_id": rng.integers(1, students + 1, n),
            "activity_id": np.where(is_exam, rng.integers(1, 200, n), rng.integers(1000, 1300, n)),
            "course_id": rng.integers(1, 20, n),
            "timestamp": pd.Timestamp(START) + pd.to_timedelta(seconds, unit="s"),
        }
    )
    meta = pd.DataFrame(
        {
            "percentage": np.where(is_exam, rng.uniform(0, 100, n).round(1), np.nan),
            "attempt_number": np.where(is_exam, rng.integers(1, 4, n), np.nan),
            "progress_percent": np.where(is_exam, np.nan, rng.uniform(0, 100, n).round(1)),
            "time_spent_seconds": rng.integers(30, 3600, n),
        }
    )
    text = meta.to_json(orient="records", lines=True)
    frame["activity_metadata"] = text.rstrip("\n").split("\n")
    return frame


def load(engine: sa.Engine, events: pd.DataFrame) -> None:
    """Bulk-load the events (``COPY`` on PostgreSQL), metadata as JSON text."""
    target = sa.Table(
        wh.lms_activity_events.name,
        sa.MetaData(schema=physical_schema(engine, SCHEMA)),
        *[
            sa.Column(c, sa.Text if c == "activity_metadata" else wh.lms_activity_events.c[c].type)
            for c in events.columns
        ],
    )
    with engine.begin() as conn:
        for i in range(0, len(events), 200_000):
            db.bulk_insert(conn, target, events.iloc[i : i + 200_000])
        if db.is_postgres(conn):
            conn.execute(sa.text(f"ANALYZE {SCHEMA}.lms_activity_events"))


def timed(label: str, fn: Callable[[], Any], rows: Callable[[Any], int] = len) -> Any:
    began = time.perf_counter()
    value = fn()
    elapsed = time.perf_counter() - began
    count = rows(value)
    print(
        f"{label:<44} {elapsed:8.2f} s   {count:>9,} rows"
        + (f"   {count / elapsed:>10,.0f} rows/s" if count and elapsed else "")
    )
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="an empty warehouse database (SQLAlchemy URL)")
    parser.add_argument("--days", type=int, default=15)
    parser.add_argument("--events-per-day", type=int, default=100_000)
    parser.add_argument("--students", type=int, default=20_000)
    args = parser.parse_args()

    engine = open_warehouse(args.url, SCHEMA)
    with engine.connect() as conn:
        if conn.execute(sa.select(sa.func.count()).select_from(wh.lms_activity_events)).scalar_one():
            raise SystemExit("the warehouse must be empty")
    events = timed("generate events", lambda: synthetic_events(args.days, args.events_per_day, args.students))
    timed("bulk-load lms_activity_events", lambda: load(engine, events) or events)

    start = START + dt.timedelta(days=args.days - 1)
    end = start + dt.timedelta(days=1)
    print(f"-- window {start:%Y-%m-%d}: the last of {args.days} days, {args.students:,} students")
    with engine.connect() as conn:
        window, history = timed(
            "read window + history",
            lambda: features.read_feature_inputs(conn, start, end),
            lambda v: len(v[0]) + len(v[1].recent),
        )
    print(
        f"   ({len(window):,} window events, {len(history.recent):,} look-back events, "
        f"{len(history.last_event_at):,} older last-seen, {len(history.failures):,} older failure counts)"
    )
    computed = timed("compute ai_ready_events (pandas)", lambda: feat.event_features(window, history, "UTC"))

    def write() -> Any:
        with engine.begin() as conn:
            return features.write_ai_ready_events(conn, computed, start, end)

    timed("write ai_ready_events (new)", write, lambda r: r.inserted)
    timed("write ai_ready_events (unchanged)", write, lambda r: r.unchanged)
    daily = timed("compute student_daily_activity", lambda: feat.daily_activity(window, "UTC"))

    def write_daily() -> Any:
        with engine.begin() as conn:
            return features.write_daily_activity(conn, daily, start.date(), end.date())

    timed("write student_daily_activity", write_daily, lambda r: r.inserted)
    with engine.connect() as conn:
        for name, stmt in {
            "event_key_unique": quality.duplicate_event_keys((start, end)),
            "event_types_known": quality.unknown_event_types((start, end)),
            "percentages_in_range": quality.percentages_out_of_range((start, end)),
            "no_future_events (whole table)": quality.future_events(dt.datetime.now(dt.UTC)),
            "students_in_window": quality.students_in_window((start, end)),
            "one_row_per_event": quality.ai_rows_not_one_per_event((start, end)),
        }.items():
            count = sa.select(sa.func.count()).select_from(stmt.subquery())
            timed(f"check query {name}", lambda count=count: conn.execute(count).scalar_one(), lambda n: n)


if __name__ == "__main__":
    main()
