"""Full-history backfill throughput against its COPY lower bound and a per-row baseline.

    python benchmarks/backfill.py                      # 1M attempts + 2M content attempts
    python benchmarks/backfill.py --students 2000 --days 30 --baseline-sample 5000   # quick look

Generates the demo LMS in PostgreSQL (unless --skip-generate), recomputes the
whole history into a fresh PostgreSQL warehouse as ONE lms_ingest_job run
(what a backfill over all days does), then measures on the same data:
- the lower bound: COPY of the source rows out + COPY of the event rows in;
- the old system's design: one SQL round trip per row read and per event written.
Prints a table; nothing here is a test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance

from benchmarks.common import DEFAULT_SERVER, Report, database_url, ensure_database, peak_rss_mb, timer
from lms_activity_pipeline import (
    db,
    names,
)
from lms_activity_pipeline.cli.instance import load_definitions
from lms_activity_pipeline.defs.runs import partition_tags
from lms_activity_pipeline.domain.event_types import event_key
from lms_activity_pipeline.lms.demo import generate_demo_lms
from lms_activity_pipeline.settings import load_settings
from lms_activity_pipeline.warehouse.store import Warehouse

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def copy_out(engine: sa.Engine, sql: str) -> io.BytesIO:
    buffer = io.BytesIO()
    with engine.connect() as conn:
        cursor = conn.connection.cursor()
        cursor.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", buffer)
    buffer.seek(0)
    return buffer


def lower_bound(lms: sa.Engine, warehouse: sa.Engine, schema: str) -> tuple[float, float, float]:
    """Seconds to COPY the source rows out, and to COPY the stored events into an empty copy of the table.

    The copy has the events table's indexes and constraints (``INCLUDING ALL``)
    and, like the real table, is WAL-logged: loading the events table can't be
    cheaper than COPY into it. The third figure is the same COPY into a
    TEMPORARY copy (no WAL), for reference only: no real load gets that.
    """
    with timer() as out:
        copy_out(lms, 'SELECT * FROM "Attempts"')
        copy_out(lms, 'SELECT * FROM "ContentAttempts"')
    seconds = []
    for kind, name in (("", f"{schema}.copy_target"), ("TEMP", "copy_target_temp")):
        events = copy_out(warehouse, f"SELECT * FROM {schema}.lms_activity_events")
        with warehouse.begin() as conn:
            conn.execute(sa.text(f"CREATE {kind} TABLE {name} (LIKE {schema}.lms_activity_events INCLUDING ALL)"))
            with timer() as into:
                conn.connection.cursor().copy_expert(f"COPY {name} FROM STDIN WITH (FORMAT csv)", events)
            conn.execute(sa.text(f"DROP TABLE {name}"))
        seconds.append(into["seconds"])
    return out["seconds"], seconds[0], seconds[1]


def per_row_baseline(lms: sa.Engine, warehouse: sa.Engine, sample: int) -> tuple[int, int, float]:
    """The old command's shape: per attempt, ORM-style lookups, then one INSERT per event."""
    with warehouse.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS baseline_events"))
        conn.execute(
            sa.text(
                "CREATE TABLE baseline_events (event_key text PRIMARY KEY, event_type text, student_id bigint, mentor_id bigint, ts timestamptz)"
            )
        )
    with lms.connect() as src:
        ids = src.execute(sa.text('SELECT id FROM "Attempts" ORDER BY id LIMIT :n'), {"n": sample}).scalars().all()
    events = 0
    with timer() as t, lms.connect() as src, warehouse.connect() as dst:
        for attempt_id in ids:
            a = src.execute(sa.text('SELECT * FROM "Attempts" WHERE id = :i'), {"i": attempt_id}).mappings().one()
            exam = src.execute(sa.text('SELECT * FROM "Exams" WHERE id = :i'), {"i": a["exam_id"]}).mappings().one()
            src.execute(sa.text('SELECT * FROM "Users" WHERE id = :i'), {"i": a["user_id"]}).mappings().one()
            mentor = src.execute(
                sa.text(
                    'SELECT mentor_id FROM "MentorAssignments" WHERE student_id = :s AND ended_at IS NULL ORDER BY id LIMIT 1'
                ),
                {"s": a["user_id"]},
            ).scalar()
            found = [("exam_started", a["started_at"])]
            if a["submitted_at"] is not None:
                found.append(("exam_completed", a["submitted_at"]))
            if a["status"] == "graded" and a["score"] is not None:
                kind = "exam_passed" if a["score"] >= exam["pass_score"] else "exam_failed"
                found.append((kind, a["graded_at"] or a["submitted_at"]))
            for kind, ts in found:
                dst.execute(
                    sa.text("INSERT INTO baseline_events VALUES (:k, :t, :s, :m, :ts) ON CONFLICT DO NOTHING"),
                    {"k": event_key("exam", attempt_id, kind), "t": kind, "s": a["user_id"], "m": mentor, "ts": ts},
                )
                dst.commit()  # the old command saved each event on its own
                events += 1
    return len(ids), events, t["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=DEFAULT_SERVER, help="PostgreSQL server URL (any database)")
    parser.add_argument("--students", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-generate", action="store_true", help="reuse the LMS database lms_bench")
    parser.add_argument("--baseline-sample", type=int, default=20_000)
    args = parser.parse_args()

    report = Report(f"Backfill benchmark ({args.students:,} students x {args.days} days)")
    lms_url = ensure_database(database_url(args.server, "lms_bench"))
    if not args.skip_generate:
        summary = generate_demo_lms(lms_url, students=args.students, days=args.days, seed=args.seed)
        report.add(
            "demo LMS generated",
            f"{summary.seconds:.1f} s",
            f"{summary.attempts:,} attempts, {summary.content_attempts:,} content attempts",
        )
    wh_url = ensure_database(database_url(args.server, "lms_bench_wh"), recreate=True)
    lms = db.create_engine(lms_url)
    attempts, contents = count(lms, '"Attempts"'), count(lms, '"ContentAttempts"')
    source_rows = attempts + contents
    with lms.connect() as conn:
        first = conn.execute(sa.text('SELECT min(started_at) FROM "Attempts"')).scalar().date().isoformat()
    today = dt.datetime.now(dt.UTC).date().isoformat()

    os.environ.update({"LMS_DATABASE_URL": lms_url, "LMS_WAREHOUSE_URL": wh_url, "LMS_PARTITIONS_START": first})
    defs = load_definitions(load_settings())
    warehouse = Warehouse(wh_url)
    warehouse.migrate()  # create the tables outside the timing
    instance = DagsterInstance.ephemeral()
    rss_start = peak_rss_mb()
    # The three ingest assets (what the lower bound moves); the feature tables have benchmarks/features.py.
    job = defs.resolve_job_def("lms_ingest_job")
    with timer() as run_time:
        run = job.execute_in_process(
            run_config=QUIET,
            instance=instance,
            tags=partition_tags(first, today)[1],
            asset_selection=[AssetKey(name) for name in names.INGEST_ASSETS],
        )
    assert run.success
    rss_peak = peak_rss_mb()
    events = count(warehouse.engine, f"{warehouse.schema}.lms_activity_events")
    seconds = run_time["seconds"]
    report.add("source rows", f"{source_rows:,}", f"{attempts:,} attempts + {contents:,} content attempts")
    report.add("events stored", f"{events:,}")
    report.add("backfill run (one run, all days, ingest assets)", f"{seconds:.1f} s", f"{first}..{today}")
    report.add("throughput", f"{source_rows / seconds:,.0f} source rows/s", f"{events / seconds:,.0f} events/s")
    report.add("peak memory", f"{rss_peak:,.0f} MB", f"{rss_start:,.0f} MB before the run (Dagster + pandas loaded)")

    copy_out_s, copy_in_s, temp_in_s = lower_bound(lms, warehouse.engine.execution_options(), warehouse.schema)
    bound = copy_out_s + copy_in_s
    report.add(
        "lower bound: COPY out + COPY in",
        f"{bound:.1f} s",
        f"{copy_out_s:.1f} s out, {copy_in_s:.1f} s into a logged copy of the events table",
    )
    report.add("backfill / lower bound", f"{seconds / bound:.2f}x", "target <= 2x")
    report.add(
        "(reference) COPY into a TEMP copy, no WAL",
        f"{temp_in_s:.1f} s",
        f"{seconds / (copy_out_s + temp_in_s):.2f}x against that",
    )

    rows, baseline_events, baseline_s = per_row_baseline(lms, warehouse.engine, args.baseline_sample)
    baseline_rate = rows / baseline_s
    report.add(
        "per-row baseline",
        f"{baseline_rate:,.0f} source rows/s",
        f"{rows:,} attempts, {baseline_events:,} events in {baseline_s:.1f} s",
    )
    report.add("pipeline / per-row baseline", f"{(source_rows / seconds) / baseline_rate:,.0f}x", "target >= 100x")
    report.print()


if __name__ == "__main__":
    main()
