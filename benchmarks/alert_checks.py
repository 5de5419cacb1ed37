"""What the outbox part of the health checks costs (``lms_health_alerts`` runs it every minute).

    python benchmarks/alert_checks.py [--pairs 1000000] [--server postgresql://...] [--repeat 7]

Fills ``lms_event_log`` of a fresh PostgreSQL warehouse (and a SQLite file) with ``--pairs`` pairs of
20,000 mentors (90% sent, 5% pending, 4% failed, 1% failed uncertain), then times
:func:`~lms_activity_pipeline.warehouse.health.outbox_health` (the backlog's age, the dead letter,
failing mentors, unsettled uncertain deliveries) and one :func:`raise_alerts` evaluation with nothing
new to send (what a quiet minute costs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from benchmarks.common import DEFAULT_SERVER, Report, database_url, ensure_database
from lms_activity_pipeline import db
from lms_activity_pipeline.domain.alerts import HEALTH_KINDS, Thresholds, health_alerts
from lms_activity_pipeline.notify.alerts import AlertSender, raise_alerts
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.alerts import AlertStore
from lms_activity_pipeline.warehouse.health import outbox_health
from lms_activity_pipeline.warehouse.store import Warehouse

MENTORS = 20_000


def fill(warehouse: Warehouse, pairs: int) -> None:
    rng = np.random.default_rng(7)
    now = pd.Timestamp.now(tz="UTC")
    status = rng.choice(["sent", "pending", "failed", "uncertain"], size=pairs, p=[0.90, 0.05, 0.04, 0.01])
    frame = pd.DataFrame(
        {
            "event_id": np.arange(1, pairs + 1),
            "mentor_id": rng.integers(1, MENTORS + 1, size=pairs),
            "status": np.where(status == "uncertain", "failed", status),
            "attempts": np.where(status == "failed", rng.integers(1, 8, size=pairs), 1),
            "delivery_uncertain": status == "uncertain",
            "created_at": now - pd.to_timedelta(rng.integers(0, 7 * 24 * 3600, size=pairs), unit="s"),
            "processed_at": now - pd.to_timedelta(rng.integers(0, 7 * 24 * 3600, size=pairs), unit="s"),
            "error_message": np.where(status == "failed", "HTTP 502: Bad Gateway", None),
        }
    )
    with db.write_transaction(warehouse.engine) as conn:
        db.bulk_insert(conn, wh.lms_event_log, frame)  # COPY on PostgreSQL, executemany on SQLite


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, max(times) * 1000


def measure(name: str, url: str, pairs: int, repeat: int, report: Report) -> None:
    warehouse = Warehouse(url)
    warehouse.migrate()
    start = time.perf_counter()
    fill(warehouse, pairs)
    report.add(f"{name}: fill {pairs:,} pairs", f"{time.perf_counter() - start:.1f} s")
    now = dt.datetime.now(dt.UTC)
    health = outbox_health(warehouse.engine, now)
    report.add(
        f"{name}: what it finds",
        f"{health.pending:,} pending, dead letter {health.dead_letter:,}, "
        f"{len(health.failing_mentors):,} failing mentors, {health.unsettled_uncertain:,} unsettled",
    )
    median, worst = timed(lambda: outbox_health(warehouse.engine, dt.datetime.now(dt.UTC)), repeat)
    report.add(f"{name}: outbox_health", f"{median:.0f} ms median, {worst:.0f} ms max", f"{repeat} runs")
    store, quiet = AlertStore(warehouse.engine), logging.getLogger("bench")
    quiet.disabled = True
    sender = AlertSender(None, None)

    def evaluate() -> None:
        facts = outbox_health(warehouse.engine, dt.datetime.now(dt.UTC)).facts(dt.datetime.now(dt.UTC))
        raise_alerts(
            store,
            sender,
            health_alerts(facts, Thresholds(), "http://ui"),
            scope=HEALTH_KINDS,
            now=dt.datetime.now(dt.UTC),
            log=quiet,
            per_hour=10**9,
        )

    evaluate()  # opens the incidents once (logged only)
    median, worst = timed(evaluate, repeat)
    report.add(f"{name}: one quiet evaluation (checks + incident state)", f"{median:.0f} ms median, {worst:.0f} ms max")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1_000_000)
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    report = Report(f"Alert health checks over {args.pairs:,} outbox pairs")
    url = ensure_database(database_url(args.server, "lms_bench_alerts"), recreate=True)
    measure("PostgreSQL", url, args.pairs, args.repeat, report)
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            measure("SQLite", f"sqlite:///{tmp}/warehouse.sqlite3", args.pairs, args.repeat, report)
    report.print()


if __name__ == "__main__":
    main()
