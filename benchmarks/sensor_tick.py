"""Cost of one lms_activity_sensor tick on a large PostgreSQL LMS.

    python benchmarks/sensor_tick.py --skip-generate      # reuse lms_bench from backfill.py

Evaluates the real sensor (build_sensor_context + evaluate_tick) with a cursor
at the LMS's head: N ticks with no change, then ticks after inserting 1,000
new attempts (removed again afterwards). Prints median and p95 per tick.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa
from dagster import DagsterInstance, build_sensor_context

from benchmarks.common import DEFAULT_SERVER, Report, database_url, ensure_database, timer
from lms_activity_pipeline import (
    db,
    names,
)
from lms_activity_pipeline.cli.instance import load_definitions
from lms_activity_pipeline.defs.resources import resources_for
from lms_activity_pipeline.lms.demo import generate_demo_lms
from lms_activity_pipeline.polling.followup import RunState
from lms_activity_pipeline.polling.plan import Cursor, plan_poll
from lms_activity_pipeline.polling.tick import PollConfig, poll
from lms_activity_pipeline.settings import load_settings
from lms_activity_pipeline.warehouse.poll_state import read_state

NEW_ROWS = 1_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--students", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=100)
    parser.add_argument("--skip-generate", action="store_true")
    parser.add_argument("--ticks", type=int, default=30)
    args = parser.parse_args()

    lms_url = ensure_database(database_url(args.server, "lms_bench"))
    if not args.skip_generate:
        generate_demo_lms(lms_url, students=args.students, days=args.days)
    wh_url = ensure_database(database_url(args.server, "lms_bench_tick_wh"), recreate=True)  # no poll state yet
    os.environ.update({"LMS_DATABASE_URL": lms_url, "LMS_WAREHOUSE_URL": wh_url})
    settings = load_settings()
    defs = load_definitions(settings)
    sensor = defs.resolve_sensor_def(names.ACTIVITY_SENSOR)
    # As the code server does for a tick: only the resources the sensor asks for are built.
    resources = {k: v for k, v in resources_for(settings, env_vars=False).items() if k in sensor.required_resource_keys}
    instance = DagsterInstance.ephemeral()
    repo = defs.get_repository_def()
    writer = db.create_engine(lms_url)
    with writer.connect() as conn:
        attempts = conn.execute(sa.text('SELECT count(*) FROM "Attempts"')).scalar_one()
    report = Report(f"Sensor tick on a PostgreSQL LMS with {attempts:,} attempts")

    def tick(cursor: str | None):
        context = build_sensor_context(instance=instance, cursor=cursor, resources=resources, repository_def=repo)
        with timer() as t:
            data = sensor.evaluate_tick(context)
        return data, t["seconds"] * 1000

    data, first_ms = tick(None)
    report.add("first tick (no cursor: plans the history run)", f"{first_ms:,.0f} ms")
    cursor = data.cursor
    idle = []
    for _ in range(args.ticks):
        data, ms = tick(cursor)
        assert not data.run_requests
        idle.append(ms)
    report.add(
        "no-change tick, median",
        f"{statistics.median(idle):.1f} ms",
        f"p95 {percentile(idle, 0.95):.1f} ms over {args.ticks} ticks; target < 50 ms",
    )
    # The same work without the sensor machinery: what is ours, and what is Dagster building resources per tick.
    reader, store = resources["lms"].reader(), resources["warehouse"].store()
    marks, own, ours = Cursor.from_json(read_state(store.engine).cursor), [], []
    config = PollConfig(settings.timezone, settings.partitions_start, dt.timedelta(seconds=settings.lookback_seconds))
    for _ in range(args.ticks):
        with timer() as t:
            assert (
                plan_poll(reader, marks, timezone=settings.timezone, partitions_start=settings.partitions_start).plan
                is None
            )
        own.append(t["seconds"] * 1000)
        with timer() as t:
            assert not poll(reader, store, lambda key: RunState.DONE, config).requests
        ours.append(t["seconds"] * 1000)
    report.add(
        "  of which the poll (plan + the shared cursor read and compare-and-set in the warehouse)",
        f"{statistics.median(ours):.1f} ms",
        "median; the rest is Dagster's per-tick resource set-up",
    )
    report.add("  of which plan_poll (our LMS queries + digest)", f"{statistics.median(own):.1f} ms", "median")

    dt.datetime.now(dt.UTC)
    busy = []
    with writer.begin() as conn:
        base = conn.execute(sa.text('SELECT max(id) FROM "Attempts"')).scalar_one()
    try:
        for round_ in range(5):
            start = base + 1 + round_ * NEW_ROWS
            with writer.begin() as conn:
                conn.execute(
                    sa.text(
                        """INSERT INTO "Attempts" (id, user_id, exam_id, status, started_at, updated_at)
                           SELECT g, 1 + g % 1000, 1, 'in_progress', :t - interval '10 minutes',
                                  :t - (CAST(:b AS bigint) - g) * interval '1 millisecond'
                           FROM generate_series(CAST(:a AS bigint), CAST(:b AS bigint)) AS g"""
                    ),
                    # dated just before now, as a correct app server writes them (not the future-row path)
                    {"a": start, "b": start + NEW_ROWS - 1, "t": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)},
                )
            data, ms = tick(cursor)
            assert len(data.run_requests) == 1
            cursor = data.cursor
            busy.append(ms)
    finally:
        with writer.begin() as conn:
            conn.execute(sa.text('DELETE FROM "Attempts" WHERE id > :b'), {"b": base})
    report.add(
        f"tick after {NEW_ROWS:,} new attempts, median",
        f"{statistics.median(busy):.1f} ms",
        f"max {max(busy):.1f} ms over {len(busy)} rounds",
    )
    report.print()


if __name__ == "__main__":
    main()
