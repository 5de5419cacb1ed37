"""Credentials a database URL can carry (userinfo password, ``?password=``, ``sslpassword``, tokens) never reach
a message, the CLI's output or a Dagster run's event log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import DagsterInstance, DagsterRunStatus
from dagster_shared.serdes import serialize_value
from sqlalchemy.engine import make_url

from lms_activity_pipeline import db
from lms_activity_pipeline.defs.resources import ZulipResource
from lms_activity_pipeline.defs.runs import run_ingest
from lms_activity_pipeline.errors import ConfigError
from lms_activity_pipeline.lms.reader import LMSReader
from lms_activity_pipeline.settings import load_settings
from lms_activity_pipeline.urls import redact_url
from lms_activity_pipeline.warehouse.store import Warehouse
from lms_activity_pipeline_tests.conftest import Backend, PgDatabases
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder
from lms_activity_pipeline_tests.support.pipeline import Pipeline
from lms_activity_pipeline_tests.support.processes import free_port

SSL_SECRET = "SslKeyPassphrase42"
TOKEN_SECRET = "ApiT0kenValue42"


@pytest.mark.parametrize(
    ("url", "secrets", "kept"),
    [
        ("postgresql://lms:UserInfoSecret@db.internal:5432/lms", ["UserInfoSecret"], "lms:***@db.internal:5432/lms"),
        ("postgresql://lms@db.internal/lms?password=QuerySecret", ["QuerySecret"], "password=***"),
        (
            "postgresql://lms@db/lms?sslmode=verify-full&sslpassword=KeyPhrase&sslkey=/keys/lms.key",
            ["KeyPhrase", "/keys/lms.key"],
            "sslmode=verify-full",
        ),
        (
            "postgresql://lms@db/lms?passfile=/home/lms/.pgpass&application_name=etl",
            [".pgpass"],
            "application_name=etl",
        ),
        (
            "postgresql://lms@db/lms?api_token=Tok1&Secret=Tok2&ACCESS_KEY=Tok3&auth=Tok4",
            ["Tok1", "Tok2", "Tok3", "Tok4"],
            "@db/lms?",
        ),
        ("postgresql://lms@db/lms?token=First&token=Second", ["First", "Second"], "token=***"),
        (
            "postgresql://lms:p%40ss%2Fw0rd@db/lms?password=a%26b%3Dc",
            ["p@ss", "p%40ss", "a&b", "a%26b"],
            "lms:***@db/lms",
        ),
        ("amqp://etl:BrokerSecret@mq.internal:5672//", ["BrokerSecret"], "amqp://etl:***@mq.internal:5672//"),
        ("postgresql://lms:PortSecret@db:5432:99/lms", ["PortSecret"], "<malformed URL>"),
        (
            "postgresql://lms:NoAtSecret/lms",
            ["NoAtSecret"],
            "<malformed URL>",
        ),  # SQLAlchemy reads the password as a port
    ],
    ids=[
        "userinfo",
        "query-password",
        "sslpassword",
        "passfile",
        "token-names",
        "repeated",
        "percent-encoded",
        "celery",
        "malformed-port",
        "malformed-userinfo",
    ],
)
def test_redact_url_hides_every_credential(url: str, secrets: list[str], kept: str) -> None:
    shown = redact_url(url)
    assert kept in shown
    assert not [s for s in secrets if s in shown], shown


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LMS_DATABASE_URL", "postgresql://lms:S3cret@db:5432:99/lms"),
        ("LMS_WAREHOUSE_URL", "postgresql:/lms:S3cret@db/lms"),  # a slash short of a URL
        ("LMS_CELERY_BROKER_URL", "guest:S3cret@mq.internal:5672"),  # no scheme
    ],
)
def test_a_mistyped_url_is_never_echoed(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"LMS_WAREHOUSE_URL": "postgresql://wh@db/wh", variable: value})
    assert str(refused.value).startswith(variable) and "S3cret" not in str(refused.value)


def test_resources_repr_and_describe_hide_credentials() -> None:
    """What a log line, a traceback or the notify run's ``zulip`` metadata may show of a resource."""
    lms = LMSReader("postgresql://lms:UserSecret@db/lms?sslpassword=KeySecret")
    warehouse = Warehouse("postgresql://wh:WhSecret@db/wh?password=QuerySecret")
    zulip = ZulipResource(
        site="https://bot:SiteSecret@zulip.example.com/?api_key=UrlKey", email="bot@example.com", api_key="Key1"
    )
    shown = f"{lms!r} {warehouse!r} {zulip!r} {zulip.describe()}"
    assert "lms:***@db/lms" in shown and "Zulip bot bot@example.com at https://bot:***@zulip.example.com" in shown
    assert_hidden(shown, ["UserSecret", "KeySecret", "WhSecret", "QuerySecret", "SiteSecret", "UrlKey", "Key1"])


def secret_url(server_url: str, database: str, *, port: int | None = None) -> tuple[str, list[str]]:
    """``database`` on the test server with a password in the userinfo and in the query, and an ``sslpassword``.

    The server's own password, if it has one, is the secret (a trust server accepts any).
    """
    server = make_url(server_url)
    password = server.password or "UserInfoSecret42"
    url = server.set(
        database=database,
        password=password,
        port=port or server.port,
        query={**server.query, "password": password, "sslpassword": SSL_SECRET},
    )
    return url.render_as_string(hide_password=False), [password, SSL_SECRET]


def assert_hidden(text: str, secrets: list[str]) -> None:
    leaked = [s for s in secrets if s in text]
    assert not leaked, f"{leaked} in:\n{text}"


def test_engine_connects_without_holding_the_query_credentials(pg_databases: PgDatabases, pg_server_url: str) -> None:
    """SQLAlchemy hides only the userinfo password in an engine's repr and errors: query credentials go to the driver."""
    url, secrets = secret_url(pg_server_url, make_url(pg_databases.create()).database)
    for read_only in (False, True):
        engine = db.create_engine(url, read_only=read_only)
        assert_hidden(f"{engine!r} {engine.url} {engine.url!r}", secrets)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        engine.dispose()


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("LMS_", "DAGSTER_HOME"))}
    return subprocess.run(
        [sys.executable, "-m", "lms_activity_pipeline.cli", *args],
        cwd=cwd,
        env={**base, "LMS_HOME": str(cwd / "home"), "DAGSTER_HOME": str(cwd / "dagster_home"), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("variable", ["LMS_DATABASE_URL", "LMS_WAREHOUSE_URL"])
def test_connection_error_line_hides_credentials(variable: str, tmp_path: Path) -> None:
    url, secrets = secret_url(
        "postgresql://postgres@127.0.0.1/postgres", "nowhere", port=free_port()
    )  # nothing listens
    proc = cli({"LMS_DATABASE_URL": f"sqlite:///{tmp_path}/absent.db", variable: url}, tmp_path, "monitor", "--once")
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"lms-activity: configuration error: {variable}: cannot connect to postgresql")
    assert ":***@127.0.0.1:" in line or ":***@localhost:" in line  # the URL is there, its password hidden
    assert_hidden(proc.stdout + proc.stderr, secrets)


def test_demo_output_and_daemon_banner_hide_credentials(
    pg_databases: PgDatabases, pg_server_url: str, tmp_path: Path
) -> None:
    lms_url, secrets = secret_url(pg_server_url, make_url(pg_databases.create("lms_src")).database)
    warehouse_url, more = secret_url(pg_server_url, make_url(pg_databases.create("lms_wh")).database)
    env = {"LMS_DATABASE_URL": lms_url, "LMS_WAREHOUSE_URL": warehouse_url}

    demo = cli(env, tmp_path, "demo", "--students", "5", "--days", "2")
    assert demo.returncode == 0, demo.stderr
    assert "Demo LMS ready at postgresql://" in demo.stdout and "password=***" in demo.stdout
    assert_hidden(demo.stdout + demo.stderr, secrets)

    base = {k: v for k, v in os.environ.items() if not k.startswith(("LMS_", "DAGSTER_HOME"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lms_activity_pipeline.cli", "monitor", "--daemon", "--interval", "1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **base,
            **env,
            "LMS_HOME": str(tmp_path / "home"),
            "DAGSTER_HOME": str(tmp_path / "dh"),
            "PYTHONUNBUFFERED": "1",
        },
    )
    lines = []
    try:
        for line in proc.stdout:  # the banner, then the first poll's lines
            lines.append(line)
            if line.startswith("Poll:"):
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    output = "".join(lines) + rest
    assert proc.returncode == 0, output
    [banner] = [line for line in output.splitlines() if line.startswith("Monitoring ")]
    assert banner.startswith("Monitoring postgresql://postgres:***@") and "password=***" in banner
    assert_hidden(output, secrets + more)


def test_failing_connection_leaves_no_credential_in_the_run_event_log(
    pg_databases: PgDatabases, pg_server_url: str, tmp_path: Path
) -> None:
    """A run whose warehouse refuses connections fails with the URL in its error: redacted, in every stored event."""
    lms_url, secrets = secret_url(pg_server_url, make_url(pg_databases.create("lms_src")).database)
    LMSBuilder(lms_url).school().write()
    warehouse_url, more = secret_url(pg_server_url, "nowhere", port=free_port())
    instance = DagsterInstance.local_temp(str(tmp_path))
    pipe = Pipeline(Backend("postgresql", lms_url, warehouse_url), instance=instance)
    result = run_ingest(pipe.defs, instance, "2024-05-03", raise_on_error=False)
    assert not result.success

    records = instance.all_logs(result.run_id)
    assert instance.get_run_by_id(result.run_id).status == DagsterRunStatus.FAILURE
    # The warehouse resource's set-up (migrating the tables) is where the run fails.
    errors = [
        r.dagster_event.event_specific_data.error.to_string()
        for r in records
        if r.dagster_event and r.dagster_event.event_type_value in ("STEP_FAILURE", "RESOURCE_INIT_FAILURE")
    ]
    assert errors and all("LMS_WAREHOUSE_URL: cannot connect to postgresql" in e for e in errors)
    assert ":***@" in errors[0]
    assert_hidden("\n".join(serialize_value(r) for r in records), secrets + more)
    instance.dispose()
