"""Shared helpers for the benchmark scripts: databases, timing, memory, printing."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from lms_activity_pipeline import db

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def database_url(server: str, name: str) -> str:
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def ensure_database(url: str, *, recreate: bool = False) -> str:
    """Create the database of ``url`` if missing (or drop and recreate it)."""
    name = make_url(url).database
    admin = sa.create_engine(db.normalise_url(make_url(url).set(database="postgres")), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
        if exists and recreate:
            conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            exists = False
        if not exists:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def timer() -> Iterator[dict[str, float]]:
    box: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - start


@dataclass
class Report:
    """Rows of (measure, value, note), printed as one table at the end."""

    title: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, measure: str, value: str, note: str = "") -> None:
        self.rows.append((measure, value, note))
        print(f"  {measure}: {value} {note}".rstrip(), flush=True)

    def print(self) -> None:
        from tabulate import tabulate

        print(f"\n## {self.title}\n")
        print(tabulate(self.rows, headers=["measure", "value", "note"], tablefmt="github"))
