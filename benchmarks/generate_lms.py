"""Benchmark: generate the demo LMS at scale and load it (COPY on PostgreSQL).

    python benchmarks/generate_lms.py                       # 20,000 students x 100 days into lms_bench
    python benchmarks/generate_lms.py --url sqlite:///tmp/lms.sqlite3 --students 2000 --days 30

A PostgreSQL database named in ``--url`` is created when missing. Prints the
rows per table, the time to build the rows in memory, the total time (build +
schema refresh + load + indexes) and rows per second.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from lms_activity_pipeline import db
from lms_activity_pipeline.lms.demo import build_demo_frames, default_now, generate_demo_lms
from lms_activity_pipeline.urls import redact_url

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/lms_bench"


def positive(name: str) -> Callable[[str], int]:
    """An argparse type for integers >= 1 whose error names the option."""

    def parse(text: str) -> int:
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1")
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help=f"LMS database URL (default {DEFAULT_URL})")
    parser.add_argument("--students", type=positive("--students"), default=20_000)
    parser.add_argument("--days", type=positive("--days"), default=100)
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args(argv)


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database named in ``url`` if it does not exist (SQLite needs nothing)."""
    parsed = db.normalise_url(url)
    if parsed.get_backend_name() != "postgresql":
        return
    name = parsed.database
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_database(args.url)
    now = default_now()

    began = time.perf_counter()
    frames = build_demo_frames(students=args.students, days=args.days, seed=args.seed, now=now)
    build_seconds = time.perf_counter() - began
    counts = {name: len(frame) for name, frame in frames.items()}
    del frames

    summary = generate_demo_lms(args.url, students=args.students, days=args.days, seed=args.seed, now=now)

    total = sum(counts.values())
    print(f"demo LMS: {args.students:,} students x {args.days} days, seed {args.seed}, now {now:%Y-%m-%d %H:%M} UTC")
    print(f"database: {redact_url(str(make_url(args.url)))}")
    print(f"{'table':<20}{'rows':>12}")
    for name, rows in counts.items():
        print(f"{name:<20}{rows:>12,}")
    print(f"{'total':<20}{total:>12,}")
    print(f"build rows in memory  {build_seconds:8.1f} s")
    print(f"generate + load total {summary.seconds:8.1f} s   {total / summary.seconds:12,.0f} rows/s")
    load = summary.seconds - build_seconds
    print(f"  of which load (est.){load:8.1f} s   {total / max(load, 1e-9):12,.0f} rows/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
