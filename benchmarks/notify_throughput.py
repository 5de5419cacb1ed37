"""Notification throughput against the loopback Zulip test server.

    python benchmarks/notify_throughput.py [--mentors 500] [--digest-mentors 50]
        [--events-per-mentor 40] [--burst-mentors 300] [--limited-mentors 60]
        [--warehouse-url postgresql://...] [--only NAME]

Each scenario runs real ``notify_mentors_job`` runs with the real ``zulip`` client:

- ``single``, ``digest``: our overhead, the server's rate limit off: one event
  per mentor (every pair is its own DM), and many events per mentor (one digest each);
- ``burst``: a burst of 3,000 pairs (300 mentors x 10 events) after an import,
  notify runs with the default config until nothing is open: how many runs it takes;
- ``limited``: one DM each to ``--limited-mentors`` mentors under Zulip's rate
  limit shape (here 20 requests per 3 s instead of 200 per 60 s, to keep it short):
  time and how many requests Zulip refused with 429.

A real Zulip server allows 200 requests per minute per bot by default, so in
production the rate limit, not this code, sets the pace.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the test helpers: the loopback Zulip server

import sqlalchemy as sa
from dagster import DagsterInstance

from lms_activity_pipeline.db import normalise_url
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.fake_zulip import FakeZulip
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder
from lms_activity_pipeline_tests.support.notify_helpers import ago, fast_zulip, recent_days
from lms_activity_pipeline_tests.support.pipeline import Pipeline, op_metadata


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
    """One run that sends everything, the server's rate limit off: our own cost per pair and message."""
    with FakeZulip(rate_limit=None) as server:
        pairs = build_lms(backend.lms_url, server, mentors, events_per_mentor)
        pipe = Pipeline(backend, DagsterInstance.ephemeral(), resources={"zulip": fast_zulip(server)})
        pipe.ingest(*recent_days(), run_config=QUIET)
        started = time.perf_counter()
        meta = op_metadata(pipe.notify(run_config=QUIET, **ONE_RUN_FOR_EVERYTHING))
        seconds = time.perf_counter() - started
    assert meta["sent"] == pairs, meta
    print(
        f"{name:<34} {backend.name:<10} {pairs:>6} pairs {meta['messages']:>5} messages in {seconds:6.2f} s: "
        f"{pairs / seconds:7.0f} pairs/s, {meta['messages'] / seconds:5.0f} messages/s"
    )


def burst(backend: Backend, mentors: int, events_per_mentor: int) -> None:
    """Default-config runs (what the sensor, the schedule and the CLI launch) until nothing is open."""
    with FakeZulip(rate_limit=None) as server:
        pairs = build_lms(backend.lms_url, server, mentors, events_per_mentor)
        pipe = Pipeline(backend, DagsterInstance.ephemeral(), resources={"zulip": fast_zulip(server)})
        pipe.ingest(*recent_days(), run_config=QUIET)
        started = time.perf_counter()
        sent_per_run: list[int] = []
        while len(sent_per_run) < 20:
            meta = op_metadata(pipe.notify(run_config=QUIET))
            sent_per_run.append(meta["sent"])
            if not meta["open_pairs_left"] or not meta["sent"]:
                break
        seconds = time.perf_counter() - started
        recipients = [m.recipient_ids[0] for m in server.messages]
    split = len(recipients) - len(set(recipients))
    print(
        f"{'burst, default config':<34} {backend.name:<10} {pairs:>6} pairs of {mentors} mentors: "
        f"{len(sent_per_run)} run(s) sent {'+'.join(map(str, sent_per_run))} in {seconds:6.2f} s, "
        f"{meta['open_pairs_left']} left; {split} mentor(s) got their digest split across runs"
    )


def limited(backend: Backend, mentors: int, window: float = 3.0, limit: int = 20) -> None:
    """Single DMs under Zulip's rate-limit shape, Zulip's wait policy (Retry-After honoured, up to 300 s)."""
    with FakeZulip(rate_limit=(window, limit)) as server:
        pairs = build_lms(backend.lms_url, server, mentors, 1)
        zulip = fast_zulip(server, max_retry_after_seconds=300.0)
        pipe = Pipeline(backend, DagsterInstance.ephemeral(), resources={"zulip": zulip})
        pipe.ingest(*recent_days(), run_config=QUIET)
        started = time.perf_counter()
        meta = op_metadata(pipe.notify(run_config=QUIET, **ONE_RUN_FOR_EVERYTHING))
        seconds = time.perf_counter() - started
        statuses = [r.status for r in server.requests if r.sender_email]
    assert meta["sent"] == pairs, meta
    floor = (len(statuses) - statuses.count(429) - limit) / limit * window
    print(
        f"{f'limited to {limit} per {window:g} s':<34} {backend.name:<10} {pairs:>6} pairs in {seconds:6.2f} s "
        f"(the limit allows it in {floor:.1f} s at best): {len(statuses)} requests, {statuses.count(429)} refused with 429"
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


#: Op config for one run that takes every pair: the defaults (``max_pairs`` used to cap a run at 1,000 pairs).
ONE_RUN_FOR_EVERYTHING: dict[str, object] = {}
#: Dagster's console logs of the runs stay out of the figures.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mentors", type=int, default=500, help="mentors with one event each")
    parser.add_argument("--digest-mentors", type=int, default=50, help="mentors with a digest each")
    parser.add_argument("--events-per-mentor", type=int, default=40, help="events per digest")
    parser.add_argument("--burst-mentors", type=int, default=300, help="mentors with 10 events each in the burst")
    parser.add_argument("--limited-mentors", type=int, default=60, help="mentors with one DM each under the rate limit")
    parser.add_argument(
        "--only", choices=["single", "digest", "burst", "limited"], action="append", help="these scenarios"
    )
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
        only = set(args.only or ["single", "digest", "burst", "limited"])
        try:
            if "single" in only:
                scenario("one DM per event", backends.fresh(), args.mentors, 1)
            if "digest" in only:
                scenario(
                    f"digests of {args.events_per_mentor} events",
                    backends.fresh(),
                    args.digest_mentors,
                    args.events_per_mentor,
                )
            if "burst" in only:
                burst(backends.fresh(), args.burst_mentors, 10)
            if "limited" in only:
                limited(backends.fresh(), args.limited_mentors)
        finally:
            backends.drop_all()


if __name__ == "__main__":
    main()
