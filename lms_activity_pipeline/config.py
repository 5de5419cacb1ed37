"""Environment configuration (DESIGN.md §6): parsing, defaults and one-line errors.

Pure Python, no Dagster: the Dagster resources, the partitions definition, the
sensor and the CLI all read their settings through :func:`load_settings`, so a
bad value is reported the same way everywhere.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote_plus
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES, EventType

if TYPE_CHECKING:
    from sqlalchemy.engine import URL


class ConfigError(ValueError):
    """A configuration value is wrong; the message is one line naming the variable."""


DEFAULT_HOME = "./.lms_activity"
DEFAULT_WAREHOUSE_SCHEMA = "lms_activity"
DEFAULT_POLL_INTERVAL = 60
DEFAULT_LOOKBACK_SECONDS = 300
DEFAULT_NOTIFY_MAX_AGE_HOURS = 24.0
DEFAULT_TIMEZONE = "UTC"
DEFAULT_PARTITIONS_START = "2024-01-01"
#: ``multiprocess`` is Dagster's default executor; ``celery`` needs the ``celery`` extra (dagster-celery).
EXECUTORS = ("multiprocess", "in_process", "celery")
DEFAULT_EXECUTOR = "multiprocess"
DEFAULT_CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
DEFAULT_CELERY_BACKEND_URL = "redis://127.0.0.1:6379/0"
DEFAULT_CELERY_QUEUE = "dagster"  # dagster-celery's default queue
URL_EXAMPLE = "postgresql://user@db.internal:5432/lms"

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def parse_positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be greater than 0")
    return value


def parse_non_negative_int(name: str, raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number of seconds") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must be 0 or more")
    return value


def parse_non_negative_float(name: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0 or value != value:
        raise ConfigError(f"{name}={raw!r} must be a number >= 0")
    return value


def parse_event_types(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated event types, validated and de-duplicated in canonical order."""
    wanted = [part.strip() for part in raw.split(",") if part.strip()]
    if not wanted:
        raise ConfigError(f"{name} is empty; list event types, e.g. {','.join(ALL_EVENT_TYPES)}")
    unknown = sorted(set(wanted) - set(ALL_EVENT_TYPES))
    if unknown:
        raise ConfigError(
            f"{name}: unknown event type(s) {', '.join(unknown)}; "
            f"known: {', '.join(ALL_EVENT_TYPES)}"
        )
    return tuple(t for t in ALL_EVENT_TYPES if t in set(wanted))


def parse_timezone(name: str, raw: str) -> str:
    try:
        ZoneInfo(raw.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{name}={raw!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)") from None
    return raw.strip()


def parse_date(name: str, raw: str) -> str:
    try:
        return dt.date.fromisoformat(raw.strip()).isoformat()
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a date in YYYY-MM-DD form") from None


def parse_database_url(name: str, raw: str) -> str:
    """A SQLAlchemy URL of a supported backend; a malformed one is a :class:`ConfigError` that never echoes it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(raw.strip())
    except ArgumentError:
        raise ConfigError(f"{name} is not a SQLAlchemy database URL (e.g. {URL_EXAMPLE})") from None
    except ValueError:  # SQLAlchemy's int() of the port, e.g. host:5432:99 or host:abc
        raise ConfigError(f"{name} has a malformed port: it must be a number from 1 to 65535 (e.g. {URL_EXAMPLE})") from None
    if url.port is not None and not 0 < url.port < 65536:
        raise ConfigError(f"{name}: port {url.port} is out of range 1-65535 (e.g. {URL_EXAMPLE})")
    if url.get_backend_name() not in {"sqlite", "postgresql"}:
        raise ConfigError(f"{name}: backend {url.get_backend_name()!r} is not supported (use sqlite or postgresql)")
    return raw.strip()


def parse_executor(name: str, raw: str) -> str:
    value = raw.strip().lower()
    if value not in EXECUTORS:
        raise ConfigError(f"{name}={raw!r} is not an executor (use {', '.join(EXECUTORS)})")
    return value


def parse_celery_url(name: str, raw: str) -> str:
    """A Celery broker or result backend URL: only its form is checked (Celery reports the rest)."""
    value = raw.strip()
    if "://" not in value:  # not echoed: a mistyped URL may still hold its password
        raise ConfigError(f"{name} is not a URL (e.g. redis://127.0.0.1:6379/0 or amqp://guest@127.0.0.1//)")
    return value


def parse_queue_name(name: str, raw: str) -> str:
    value = raw.strip()
    if not value.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise ConfigError(f"{name}={raw!r} must be letters, digits, '_', '-' and '.'")
    return value


#: A query parameter whose name contains one of these carries a credential (``password``,
#: ``sslpassword``, ``passfile``, ``token``, ``api_key``, ``secret``, ``sslkey``, ``X-Amz-Signature``...).
CREDENTIAL_MARKERS = ("pass", "pwd", "secret", "token", "key", "auth", "credential", "signature")
HIDDEN = "***"


def is_credential(name: str) -> bool:
    """Whether a URL query parameter called ``name`` may hold a secret (case-insensitive)."""
    lowered = name.lower()
    return any(marker in lowered for marker in CREDENTIAL_MARKERS)


def redact_url(url: str | URL) -> str:
    """``url`` fit for a message or a log: its password and every credential-like query parameter as ``***``.

    Every message, banner and log line that shows a URL goes through this function. A string that
    SQLAlchemy cannot parse is not shown at all: its secret could be anywhere in it.
    """
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = url if isinstance(url, URL) else make_url(url.strip())
    except (ArgumentError, ValueError):
        return "<malformed URL>"
    query = {key: HIDDEN if is_credential(key) else value for key, value in parsed.query.items()}
    shown = parsed.set(query=query).render_as_string(hide_password=True)
    return shown.replace(f"={quote_plus(HIDDEN)}", f"={HIDDEN}")  # SQLAlchemy quotes query values


@dataclass(frozen=True)
class Settings:
    """Every setting of DESIGN.md §6, parsed and validated."""

    home: Path
    lms_database_url: str
    warehouse_url: str
    warehouse_schema: str
    monitor_enabled: bool
    poll_interval: int
    notify_enabled: bool
    event_types: tuple[str, ...]
    notify_max_age_hours: float
    timezone: str
    partitions_start: str
    lms_url_is_default: bool
    lookback_seconds: int = DEFAULT_LOOKBACK_SECONDS
    executor: str = DEFAULT_EXECUTOR
    celery_broker_url: str = DEFAULT_CELERY_BROKER_URL
    celery_backend_url: str = DEFAULT_CELERY_BACKEND_URL
    celery_queue: str = DEFAULT_CELERY_QUEUE

    @property
    def demo_lms_path(self) -> Path:
        return self.home / "demo_lms.sqlite3"

    @property
    def default_dagster_home(self) -> Path:
        return self.home / "dagster_home"


def default_lms_url(home: Path) -> str:
    return f"sqlite:///{(home / 'demo_lms.sqlite3').resolve()}"


def default_warehouse_url(home: Path) -> str:
    return f"sqlite:///{(home / 'warehouse.sqlite3').resolve()}"


def warehouse_schema(environ: Mapping[str, str] | None = None) -> str:
    """``LMS_WAREHOUSE_SCHEMA`` (default ``lms_activity``), validated; nothing else is read."""
    env = os.environ if environ is None else environ
    schema = (env.get("LMS_WAREHOUSE_SCHEMA") or "").strip() or DEFAULT_WAREHOUSE_SCHEMA
    if not schema.replace("_", "").isalnum():
        raise ConfigError(f"LMS_WAREHOUSE_SCHEMA={schema!r} must be letters, digits and underscores")
    return schema


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment; raise :class:`ConfigError` on the first bad value."""
    env = os.environ if environ is None else environ

    def get(name: str) -> str | None:
        value = env.get(name)
        return value if value is not None and value.strip() != "" else None

    home = Path(get("LMS_HOME") or DEFAULT_HOME).expanduser()
    lms_raw = get("LMS_DATABASE_URL")
    schema = warehouse_schema(env)
    warehouse_url = (
        parse_database_url("LMS_WAREHOUSE_URL", get("LMS_WAREHOUSE_URL") or "")
        if get("LMS_WAREHOUSE_URL")
        else default_warehouse_url(home)
    )
    executor = parse_executor("LMS_EXECUTOR", get("LMS_EXECUTOR") or DEFAULT_EXECUTOR)
    if executor == "celery" and warehouse_url.startswith("sqlite"):
        raise ConfigError(
            "LMS_EXECUTOR=celery needs a PostgreSQL LMS_WAREHOUSE_URL: "
            "Celery workers on other machines cannot share a SQLite file"
        )
    return Settings(
        home=home,
        lms_database_url=parse_database_url("LMS_DATABASE_URL", lms_raw) if lms_raw else default_lms_url(home),
        warehouse_url=warehouse_url,
        warehouse_schema=schema,
        monitor_enabled=parse_bool("LMS_ACTIVITY_MONITOR_ENABLED", get("LMS_ACTIVITY_MONITOR_ENABLED") or "true"),
        poll_interval=parse_positive_int(
            "LMS_ACTIVITY_POLL_INTERVAL", get("LMS_ACTIVITY_POLL_INTERVAL") or str(DEFAULT_POLL_INTERVAL)
        ),
        notify_enabled=parse_bool("LMS_NOTIFY_MENTORS_ENABLED", get("LMS_NOTIFY_MENTORS_ENABLED") or "true"),
        event_types=parse_event_types(
            "LMS_EVENT_TYPES_TO_MONITOR", get("LMS_EVENT_TYPES_TO_MONITOR") or ",".join(ALL_EVENT_TYPES)
        ),
        notify_max_age_hours=parse_non_negative_float(
            "LMS_NOTIFY_MAX_AGE_HOURS", get("LMS_NOTIFY_MAX_AGE_HOURS") or str(DEFAULT_NOTIFY_MAX_AGE_HOURS)
        ),
        timezone=parse_timezone("LMS_TIMEZONE", get("LMS_TIMEZONE") or DEFAULT_TIMEZONE),
        partitions_start=parse_date("LMS_PARTITIONS_START", get("LMS_PARTITIONS_START") or DEFAULT_PARTITIONS_START),
        lms_url_is_default=lms_raw is None,
        lookback_seconds=parse_non_negative_int(
            "LMS_ACTIVITY_LOOKBACK_SECONDS", get("LMS_ACTIVITY_LOOKBACK_SECONDS") or str(DEFAULT_LOOKBACK_SECONDS)
        ),
        executor=executor,
        celery_broker_url=parse_celery_url(
            "LMS_CELERY_BROKER_URL", get("LMS_CELERY_BROKER_URL") or DEFAULT_CELERY_BROKER_URL
        ),
        celery_backend_url=parse_celery_url(
            "LMS_CELERY_BACKEND_URL", get("LMS_CELERY_BACKEND_URL") or DEFAULT_CELERY_BACKEND_URL
        ),
        celery_queue=parse_queue_name("LMS_CELERY_QUEUE", get("LMS_CELERY_QUEUE") or DEFAULT_CELERY_QUEUE),
    )


__all__ = [
    "ConfigError",
    "EventType",
    "Settings",
    "load_settings",
    "is_credential",
    "redact_url",
]
