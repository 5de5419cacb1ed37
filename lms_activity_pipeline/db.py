"""Database plumbing shared by the LMS reader and the warehouse.

Engines (read-only for the LMS), bulk reads into pandas and bulk writes from
pandas: ``COPY`` on PostgreSQL, one ``executemany`` on SQLite. Never a
statement per row.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.types import NullType

from lms_activity_pipeline.domain.cleaning import parse_times
from lms_activity_pipeline.errors import ConfigError
from lms_activity_pipeline.urls import is_credential, redact_url

#: What the readers take: a SELECT, or a UNION of them.
Query = sa.Select[Any] | sa.CompoundSelect

NULL_MARK = r"\N"


#: Engines by (caller's key, process), newest last. Dagster builds new resources for every sensor tick
#: and run step; a new engine each time meant a new connection per tick. One per process: a forked
#: process must not share its parent's pooled sockets.
_ENGINES: OrderedDict[tuple[Hashable, int], Engine] = OrderedDict()
_MAX_ENGINES = 8
_ENGINES_LOCK = threading.Lock()


def shared_engine(key: Hashable, create: Callable[[], Engine]) -> Engine:
    """This process's engine for ``key``, made by ``create`` the first time; the least recently used
    beyond eight are disposed."""
    slot = (key, os.getpid())
    with _ENGINES_LOCK:
        engine = _ENGINES.get(slot)
        if engine is None:
            engine = _ENGINES[slot] = create()
        _ENGINES.move_to_end(slot)
        while len(_ENGINES) > _MAX_ENGINES:
            _ENGINES.popitem(last=False)[1].dispose()
        return engine


def is_postgres(bind: Engine | Connection) -> bool:
    return bind.dialect.name == "postgresql"


def insert(conn: Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """``INSERT`` in the connection's dialect, which has ``on_conflict_do_nothing`` / ``_do_update``."""
    return (postgresql.insert if is_postgres(conn) else sqlite.insert)(table)


def normalise_url(url: str | URL) -> URL:
    """``postgresql://`` means psycopg2 here (SQLAlchemy 2.1 would pick psycopg 3)."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


def sqlite_path(url: URL) -> Path | None:
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def create_engine(url: str | URL, *, read_only: bool = False, variable: str = "database URL") -> Engine:
    """An engine for ``url``; ``read_only`` makes every session refuse writes.

    PostgreSQL sessions get ``default_transaction_read_only=on``; SQLite files
    are opened through a ``mode=ro`` URI, and every SQLite connection runs
    ``PRAGMA query_only``. A missing SQLite file is a
    :class:`ConfigError` naming ``variable`` instead of a silently created file.
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(parsed)
        if read_only and path is not None:
            if not path.exists():
                raise ConfigError(f"{variable}: SQLite database {path} does not exist")
            parsed = parsed.set(database=f"file:{path.resolve()}", query={"mode": "ro", "uri": "true"})
        elif path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        if read_only:  # also for URI-form and in-memory URLs, which ``mode=ro`` above does not reach
            sa.event.listen(engine, "connect", _sqlite_query_only)
        return engine
    parsed, credentials = without_credentials(parsed)
    connect_args: dict[str, object] = {
        "connect_timeout": 10,
        "application_name": "lms-activity-pipeline",
        **credentials,
    }
    if read_only:
        connect_args["options"] = "-c default_transaction_read_only=on"
    return sa.create_engine(parsed, connect_args=connect_args, pool_pre_ping=True)


def without_credentials(url: URL) -> tuple[URL, dict[str, Any]]:
    """``url`` without its credential-like query parameters (``?password=``, ``sslpassword``...), and those.

    They go to the driver as connect arguments (libpq takes the same keywords either way), so the
    engine's URL, which SQLAlchemy shows in its repr and errors hiding only the userinfo password,
    never holds them.
    """
    secrets = {key: value for key, value in url.query.items() if is_credential(key)}
    return url.difference_update_query(secrets), secrets


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.close()


def _sqlite_query_only(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only = ON")
    cursor.close()


def check_connection(engine: Engine, variable: str) -> None:
    """Connect once; an unreachable database is a one-line :class:`ConfigError` naming ``variable``."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc).splitlines()[0]
        raise ConfigError(f"{variable}: cannot connect to {redact_url(engine.url)}: {reason}") from None


def use_wal(engine: Engine) -> None:
    """Put a SQLite database file in WAL mode (kept in the file): readers and the writer stop blocking each other.

    Only for databases the pipeline writes (the warehouse): a read-only opener of a
    WAL file needs its ``-shm`` file, which the LMS's own writers may not provide.
    """
    if engine.dialect.name != "sqlite" or sqlite_path(engine.url) is None:
        return
    with engine.connect() as conn:
        if str(conn.exec_driver_sql("PRAGMA journal_mode").scalar()).lower() != "wal":
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that writes: ``BEGIN IMMEDIATE`` on SQLite, a plain one on PostgreSQL.

    Every warehouse write goes through here. SQLite has one writer at a time; a
    deferred transaction that reads first and then writes fails at once with
    ``database is locked`` when another process writes meanwhile (waiting could
    deadlock, so SQLite does not wait). Taking the write lock up front makes a
    second writer wait (``busy_timeout``, 30 s) at ``BEGIN`` instead, and it
    sees the first one's work.
    """
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")  # the driver leaves BEGIN/COMMIT to us
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            raise
        conn.exec_driver_sql("COMMIT")


def raw_select(stmt: Query) -> sa.Select:
    """``stmt`` with every result column untyped, so values arrive exactly as stored.

    SQLite keeps whatever a messy LMS wrote (text in a numeric column, odd
    timestamp strings); validation happens in pandas, row by row masks, not in
    a result processor that would fail the whole query.
    """
    sub = stmt.subquery()
    return sa.select(*[sa.type_coerce(c, NullType()).label(c.name) for c in sub.c])


#: How sqlite3 fails a whole query over one TEXT value that is not UTF-8 (e.g. Latin-1 bytes).
SQLITE_UNDECODABLE = "Could not decode to UTF-8"


def read_frame(conn: Connection, stmt: Query) -> pd.DataFrame:
    """Run ``stmt`` and return its rows as a DataFrame (``COPY ... TO STDOUT`` on PostgreSQL).

    Text that is not UTF-8 (Latin-1 bytes in a SQLite file, any bytes in a
    PostgreSQL ``SQL_ASCII`` database) is read with U+FFFD in place of the bad
    bytes instead of failing the read; cleaning reports those values.
    """
    if not is_postgres(conn):
        return _read_sqlite(conn, stmt)
    translate = conn.get_execution_options().get("schema_translate_map")
    compiled = stmt.compile(
        dialect=conn.dialect,
        schema_translate_map=translate,
        render_schema_translate=translate is not None,
        compile_kwargs={"render_postcompile": True},
    )
    cursor = conn.connection.cursor()
    try:
        query = cursor.mogrify(str(compiled), compiled.params).decode()
        buffer = io.BytesIO()
        cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true, NULL '{NULL_MARK}')", buffer)
    finally:
        cursor.close()
    buffer.seek(0)
    names = [c.name for c in stmt.selected_columns]
    if buffer.getbuffer().nbytes == 0:
        return pd.DataFrame({n: pd.Series(dtype=object) for n in names})
    return pd.read_csv(buffer, na_values=[NULL_MARK], keep_default_na=False, dtype=str, encoding_errors="replace")


def _read_sqlite(conn: Connection, stmt: Query) -> pd.DataFrame:
    try:
        return pd.read_sql(raw_select(stmt), conn)
    except OperationalError as exc:
        if SQLITE_UNDECODABLE not in str(exc.orig):
            raise
    # Read again with a lenient decoder: only then, since it runs in Python for every text value.
    dbapi: Any = conn.connection.dbapi_connection  # sqlite3.Connection
    dbapi.text_factory = _lenient_text
    try:
        return pd.read_sql(raw_select(stmt), conn)
    finally:
        dbapi.text_factory = str


def _lenient_text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def read_typed(conn: Connection, stmt: Query) -> pd.DataFrame:
    """:func:`read_frame`, with each column converted to its SQL type (see :func:`typed`)."""
    return typed(read_frame(conn, stmt), stmt.selected_columns)


_BOOL_TEXT = {"t": True, "true": True, "1": True, "1.0": True, "f": False, "false": False, "0": False, "0.0": False}


def typed(frame: pd.DataFrame, columns: Iterable[sa.ColumnElement]) -> pd.DataFrame:
    """Convert raw values (PostgreSQL ``COPY`` text, SQLite storage) by the columns' SQL types.

    Integers become ``Int64``, floats ``float64``, booleans ``boolean``,
    timestamps UTC ``datetime64``, dates ``datetime.date``, JSON parsed objects.
    """
    out = frame.copy()
    for col in columns:
        name = col.name
        if name not in out.columns:
            continue
        kind, values = col.type, out[name]
        if isinstance(kind, sa.Boolean):
            text = values.astype("string").str.strip().str.lower()
            out[name] = text.map(_BOOL_TEXT).astype("boolean")
        elif isinstance(kind, sa.Integer):
            out[name] = pd.to_numeric(values, errors="coerce").astype("Int64")
        elif isinstance(kind, (sa.Float, sa.Numeric)):
            out[name] = pd.to_numeric(values, errors="coerce").astype("float64")
        elif isinstance(kind, sa.DateTime):
            out[name] = parse_times(values)
        elif isinstance(kind, sa.Date):
            out[name] = pd.to_datetime(values, errors="coerce").dt.date.astype(object)
        elif isinstance(kind, sa.JSON):
            out[name] = values.map(lambda v: json.loads(v) if isinstance(v, str) else v).astype(object)
    return out


def bulk_insert(conn: Connection, table: sa.Table, frame: pd.DataFrame) -> int:
    """Insert ``frame`` into ``table`` (``COPY`` on PostgreSQL, executemany on SQLite).

    Columns are matched by name; missing ones get their default/NULL. The
    connection's schema translation applies to ``table``'s schema.
    """
    if frame.empty:
        return 0
    columns = [c for c in table.columns if c.name in frame.columns]
    data = frame[[c.name for c in columns]]
    if is_postgres(conn):
        target = _physical_name(conn, table)
        column_list = ", ".join(conn.dialect.identifier_preparer.quote(c.name) for c in columns)
        cursor = conn.connection.cursor()
        try:
            cursor.copy_expert(
                f"COPY {target} ({column_list}) FROM STDIN WITH (FORMAT csv, NULL '{NULL_MARK}')",
                CsvChunks(data, columns),
            )
        finally:
            cursor.close()
    else:
        conn.execute(table.insert(), _records(data))
    return len(data)


class CsvChunks:
    """A frame as a file of ``COPY`` CSV, rendered ``rows`` rows per ``read()``.

    PostgreSQL loads one chunk while pandas renders the next, and the whole
    text never sits in memory at once.
    """

    def __init__(self, frame: pd.DataFrame, columns: Iterable[sa.Column], rows: int = 50_000) -> None:
        self.frame, self.columns, self.rows, self.offset = frame, list(columns), rows, 0

    def read(self, size: int = -1) -> str:
        if self.offset >= len(self.frame):
            return ""
        chunk = self.frame.iloc[self.offset : self.offset + self.rows]
        self.offset += self.rows
        return _frame_for_csv(chunk, self.columns).to_csv(
            index=False, header=False, na_rep=NULL_MARK, quoting=csv.QUOTE_MINIMAL
        )

    def readline(self) -> str:
        return self.read()


def _physical_name(conn: Connection, table: sa.Table) -> str:
    """``table``'s quoted name as the database knows it (schema translation applied)."""
    preparer = conn.dialect.identifier_preparer
    translate = conn.get_execution_options().get("schema_translate_map") or {}
    schema = translate.get(table.schema, table.schema)
    name = preparer.quote(table.name)
    return f"{preparer.quote_schema(schema)}.{name}" if schema else name


def _frame_for_csv(frame: pd.DataFrame, columns: Iterable[sa.Column]) -> pd.DataFrame:
    out = frame.copy()
    for col in columns:
        series = out[col.name]
        if isinstance(col.type, sa.Integer) and pd.api.types.is_float_dtype(series):
            out[col.name] = series.astype("Int64")
        elif isinstance(col.type, sa.DateTime) and pd.api.types.is_datetime64_any_dtype(series):
            out[col.name] = _iso_utc(series)
    return out


def _iso_utc(series: pd.Series) -> pd.Series:
    """ISO-8601 UTC text (``2024-05-01T12:00:00.000000Z``) for a datetime column; missing stays missing.

    Timezone-aware values are converted to UTC first (naive values are UTC).
    Formatted by numpy in C: millions of values per second.
    """
    if series.dt.tz is not None:
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    values = series.to_numpy(dtype="datetime64[us]")
    text = np.datetime_as_string(values, unit="us", timezone="UTC").astype(object)
    text[np.isnat(values)] = None
    return pd.Series(text, index=series.index, dtype=object)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts with ``None`` for missing values and plain Python scalars."""
    converted = frame.astype(object).where(frame.notna(), None)
    return [{str(k): v for k, v in row.items()} for row in converted.to_dict("records")]


def temp_table(name: str, columns: Iterable[sa.Column]) -> sa.Table:
    """A ``TEMPORARY`` staging table with copies of ``columns`` (no constraints)."""
    return sa.Table(
        name,
        sa.MetaData(),
        *[sa.Column(c.name, c.type) for c in columns],
        prefixes=["TEMPORARY"],
    )
