"""Notification throughput against the loopback Zulip test server (our overhead, not Zulip's).

    python benchmarks/notify_throughput.py [--mentors 500] [--digest-mentors 50]
        [--events-per-mentor 40] [--warehouse-url postgresql://...]

Two scenarios, each one real ``notify_mentors_job`` run with the real ``zulip``
client: one event per mentor (every pair is its own DM), and many events per
mentor (one digest each). A real Zulip server allows 200 requests per minute
per bot by default, so in production the rate limit, not this code, sets the pace.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
import uuid
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers: the loopback Zulip server

import sqlalchemy as sa  # noqa: E402
from dagster import DagsterInstance  # noqa: E402

from lms_activity_pipeline.db import normalise_url  # noqa: E402
from lms_activity_pipeline_tests.conftest import Backend  # noqa: E402
from lms_activity_pipeline_tests.fake_zulip import FakeZulip  # noqa: E402
from lms_activity_pipeline_tests.lms_builder import LMSBuilder  # noqa: E402
from lms_activity_pipeline_tests.notify_helpers import ago, fast_zulip, recent_days  # noqa: E402
from lms_activity_pipeline_tests.pipeline import Pipeline, op_metadata  # noqa: E402


def build_lms(url: str, server: FakeZulip, mentors: int, events_per_mentor: int) -> int:
    """One student per mentor; ``events_per_mentor`` events each (2 per completed article). Returns pairs."""
    b = LMSBuilder(url).course(1, "Course")
    articles = max(events_per_mentor // 2, 1)
    for a in range(articles):
        b.content(a + 1, 1, f"Article {a + 1}", "article")
    attempt = 0
    for m in range(mentors):
        mentor_id, student_id = 100_000 + m, m + 1
        b.user(mentor_id, f"mentor{m}", role="mentor").user(student_id, f"student{m}")
        b.assign(m + 1, student_id, mentor_id, ago(100))
        server.add_user(f"mentor{m}@example.edu")
        if events_per_mentor == 1:
            attempt += 1
            b.content_attempt(attempt, student_id, 1, "in_progress", ago(2), progress_percent=10)
            continue
        for a in range(articles):
            attempt += 1
            b.content_attempt(
                attempt, student_id, a + 1, "completed", ago(3), completed_at=ago(2), progress_percent=100
            )
    b.write()
    return mentors * (1 if events_per_mentor == 1 else 2 * articles)


def scenario(name: str, backend: Backend, mentors: int, events_per_mentor: int) -> None:
    with FakeZulip() as server:
        pairs = build_lms(backend.lms_url, server, mentors, events_per_mentor)
        pipe = Pipeline(backend, DagsterInstance.ephemeral(), resources={"zulip": fast_zulip(server)})
        pipe.ingest(*recent_days())
        started = time.perf_counter()
        meta = op_metadata(pipe.notify(max_pairs=pairs))
        seconds = time.perf_counter() - started
    assert meta["sent"] == pairs, meta
    print(
        f"{name:<34} {backend.name:<10} {pairs:>6} pairs {meta['messages']:>5} messages in {seconds:6.2f} s: "
        f"{pairs / seconds:7.0f} pairs/s, {meta['messages'] / seconds:5.0f} messages/s"
    )


class Backends:
    """Fresh (LMS, warehouse) pairs: SQLite files, or scratch PostgreSQL databases dropped afterwards."""

    def __init__(self, tmp: Path, pg_url: str | None) -> None:
        self.tmp, self.pg_url, self.created = tmp, pg_url, []

    def fresh(self) -> Backend:
        key = uuid.uuid4().hex[:8]
        if self.pg_url is None:
            return Backend(
                "sqlite", f"sqlite:///{self.tmp / f'lms_{key}.sqlite3'}", f"sqlite:///{self.tmp / f'wh_{key}.sqlite3'}"
            )
        names = [f"bench_lms_{key}", f"bench_wh_{key}"]
        self._admin([f'CREATE DATABASE "{n}"' for n in names])
        self.created += names
        base = sa.engine.make_url(self.pg_url)
        return Backend("postgresql", *(base.set(database=n).render_as_string(hide_password=False) for n in names))

    def drop_all(self) -> None:
        if self.created:
            self._admin([f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in self.created])

    def _admin(self, statements: list[str]) -> None:
        admin = sa.create_engine(normalise_url(self.pg_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for statement in statements:
                conn.execute(sa.text(statement))
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mentors", type=int, default=500, help="mentors with one event each")
    parser.add_argument("--digest-mentors", type=int, default=50, help="mentors with a digest each")
    parser.add_argument("--events-per-mentor", type=int, default=40, help="events per digest")
    parser.add_argument(
        "--warehouse-url", default=os.environ.get("LMS_TEST_POSTGRES_URL"), help="PostgreSQL server URL"
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    os.environ.setdefault("HOME", tempfile.mkdtemp())
    for name in [n for n in os.environ if n.startswith("ZULIP_")]:
        del os.environ[name]
    print(f"now {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        backends = Backends(Path(tmp), args.warehouse_url or None)
        try:
            scenario("one DM per event", backends.fresh(), args.mentors, 1)
            scenario(
                f"digests of {args.events_per_mentor} events",
                backends.fresh(),
                args.digest_mentors,
                args.events_per_mentor,
            )
        finally:
            backends.drop_all()


if __name__ == "__main__":
    main()
