"""The environment, read once: every variable's name, default, parser and meaning, and the :class:`Settings`.

:data:`VARIABLES` is the one list of the pipeline's environment variables: :func:`load_settings` reads
them, the Dagster resources are built from the :class:`Settings` it returns (``EnvVar`` for a variable
that is set, so the UI shows its name and secrets never appear), the README's configuration table is
checked against it and the test fixture clears exactly these. A bad value stops with one
:class:`~lms_activity_pipeline.errors.ConfigError` line naming the variable.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES
from lms_activity_pipeline.errors import ConfigError

DEFAULT_HOME = "./.lms_activity"
DEFAULT_WAREHOUSE_SCHEMA = "lms_activity"
DEFAULT_PARTITIONS_START = "2024-01-01"
#: ``multiprocess`` is Dagster's default executor; ``celery`` needs the ``celery`` extra (dagster-celery).
EXECUTORS = ("multiprocess", "in_process", "celery")
#: Days of history the demo LMS gets by default (``lms-activity demo --days``).
DEMO_DAYS = 14
DEMO_LMS_FILE = "demo_lms.sqlite3"
WAREHOUSE_FILE = "warehouse.sqlite3"
#: The table the demo LMS writes to mark itself (see ``lms/demo.py``).
DEMO_MARKER_TABLE = "lms_activity_demo"

URL_EXAMPLE = "postgresql://user@db.internal:5432/lms"

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


# --- parsers: (variable name, raw text) -> value, or a one-line ConfigError ----------------------------


def parse_text(name: str, raw: str) -> str:
    return raw.strip()


def parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true or false)")


def parse_positive_int(name: str, raw: str) -> int:
    value = _int(name, raw)
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be greater than 0")
    return value


def parse_non_negative_int(name: str, raw: str) -> int:
    value = _int(name, raw)
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must be 0 or more")
    return value


def _int(name: str, raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number of seconds") from None


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
        raise ConfigError(f"{name}: unknown event type(s) {', '.join(unknown)}; known: {', '.join(ALL_EVENT_TYPES)}")
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
        raise ConfigError(
            f"{name} has a malformed port: it must be a number from 1 to 65535 (e.g. {URL_EXAMPLE})"
        ) from None
    if url.port is not None and not 0 < url.port < 65536:
        raise ConfigError(f"{name}: port {url.port} is out of range 1-65535 (e.g. {URL_EXAMPLE})")
    if url.get_backend_name() not in {"sqlite", "postgresql"}:
        raise ConfigError(f"{name}: backend {url.get_backend_name()!r} is not supported (use sqlite or postgresql)")
    return raw.strip()


def parse_identifier(name: str, raw: str) -> str:
    value = raw.strip()
    if not value.replace("_", "").isalnum():
        raise ConfigError(f"{name}={value!r} must be letters, digits and underscores")
    return value


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


def parse_frequency(name: str, raw: str) -> str:
    """A notification frequency (issue 12: mentor notification preferences)."""
    from lms_activity_pipeline.domain.preferences import FREQUENCIES

    value = raw.strip().lower()
    if value not in FREQUENCIES:
        raise ConfigError(f"{name}={raw!r} is not a frequency (use {', '.join(FREQUENCIES)})")
    return value


def read_rules(name: str, raw: str) -> Any:
    """The :class:`~lms_activity_pipeline.domain.rules.RuleSet` of the YAML file at ``raw`` (issue 12:
    notification rules); an unreadable file or a bad rule is one line naming the rule and field."""
    import yaml

    from lms_activity_pipeline.domain.rules import RulesError, parse_rules

    path = Path(raw.strip()).expanduser()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{name}={raw!r}: cannot read the rules file ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{name}={raw!r}: not valid YAML{at}: {problem}") from None
    try:
        return parse_rules(data)
    except RulesError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from None


def parse_rules_path(name: str, raw: str) -> str:
    """A rules file that can be read and whose rules are valid (checked at startup of every entry point)."""
    read_rules(name, raw)
    return raw.strip()


#: ``LMS_RISK_DIGEST_FREQUENCY`` and ``LMS_RISK_MODEL`` values.
RISK_DIGEST_FREQUENCIES = ("immediate", "daily", "weekly")
RISK_MODELS = ("rules", "learned")


def parse_choice(name: str, raw: str, choices: tuple[str, ...]) -> str:
    value = raw.strip().lower()
    if value not in choices:
        raise ConfigError(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return value


def parse_webhook_secrets(name: str, raw: str) -> tuple[str, ...]:
    """Comma-separated Standard Webhooks secrets: ``whsec_`` and base64 (the value is never echoed)."""
    import base64
    import binascii

    secrets = tuple(part.strip() for part in raw.split(",") if part.strip())
    for i, secret in enumerate(secrets, 1):
        try:
            key = base64.b64decode(secret.removeprefix("whsec_") + "==", validate=False)
        except (binascii.Error, ValueError):
            key = b""
        if not secret.startswith("whsec_") or len(key) < 16:
            raise ConfigError(f"{name}: secret {i} is not a whsec_ secret (whsec_ and 16+ bytes of base64)")
    if not secrets:
        raise ConfigError(f"{name} holds no secret")
    return secrets


# --- the variables ---------------------------------------------------------------------------------------

#: A default computed from the values read so far (by field name), e.g. a path under ``LMS_HOME``.
Default = str | Callable[[Mapping[str, Any]], str] | None


@dataclass(frozen=True)
class Variable:
    """One environment variable: the :class:`Settings` field it fills, its default and its parser."""

    name: str
    field: str
    default: Default
    parse: Callable[[str, str], Any]
    meaning: str
    secret: bool = False
    #: The default as the docs show it (when it is computed, or clearer in words).
    shown: str | None = None

    def default_text(self, values: Mapping[str, Any]) -> str | None:
        return self.default(values) if callable(self.default) else self.default


def _under_home(file: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda values: f"sqlite:///{(Path(values['home']) / file).resolve()}"


def _partitions_start(values: Mapping[str, Any]) -> str:
    """The contract's 2024-01-01, or for the demo LMS the first day of its history (not years of empty days)."""
    if not values["lms_url_is_default"]:
        return DEFAULT_PARTITIONS_START
    first = demo_history_start(Path(values["home"]) / DEMO_LMS_FILE)
    return (first or dt.date.today() - dt.timedelta(days=DEMO_DAYS)).isoformat()


VARIABLES: tuple[Variable, ...] = (
    Variable("LMS_HOME", "home", DEFAULT_HOME, parse_text, "where local files live (demo LMS, SQLite warehouse)"),
    Variable(
        "LMS_DATABASE_URL",
        "lms_database_url",
        _under_home(DEMO_LMS_FILE),
        parse_database_url,
        "SQLAlchemy URL of the LMS, opened read-only",
        shown="the demo LMS, `sqlite:///$LMS_HOME/demo_lms.sqlite3`",
    ),
    Variable(
        "LMS_WAREHOUSE_URL",
        "warehouse_url",
        _under_home(WAREHOUSE_FILE),
        parse_database_url,
        "SQLAlchemy URL of the event store",
        shown="`sqlite:///$LMS_HOME/warehouse.sqlite3`",
    ),
    Variable(
        "LMS_WAREHOUSE_SCHEMA",
        "warehouse_schema",
        DEFAULT_WAREHOUSE_SCHEMA,
        parse_identifier,
        "PostgreSQL schema of the event store",
    ),
    Variable("LMS_ACTIVITY_MONITOR_ENABLED", "monitor_enabled", "true", parse_bool, "the sensor runs by default"),
    Variable(
        "LMS_ACTIVITY_POLL_INTERVAL",
        "poll_interval",
        "60",
        parse_positive_int,
        "seconds between sensor ticks / `monitor --daemon` polls",
    ),
    Variable(
        "LMS_ACTIVITY_LOOKBACK_SECONDS",
        "lookback_seconds",
        "300",
        parse_non_negative_int,
        "each poll also re-reads rows whose `updated_at` is this much older than the cursor, so rows "
        "committed late are not missed",
    ),
    Variable("LMS_NOTIFY_MENTORS_ENABLED", "notify_enabled", "true", parse_bool, "send notifications at all"),
    Variable(
        "LMS_EVENT_TYPES_TO_MONITOR",
        "event_types",
        ",".join(ALL_EVENT_TYPES),
        parse_event_types,
        "comma-separated event types to store and notify",
        shown="all seven",
    ),
    Variable(
        "LMS_NOTIFY_MAX_AGE_HOURS",
        "notify_max_age_hours",
        "24",
        parse_non_negative_float,
        "older events are stored, never notified",
    ),
    Variable("LMS_TIMEZONE", "timezone", "UTC", parse_timezone, "the time zone of partition days"),
    Variable(
        "LMS_PARTITIONS_START",
        "partitions_start",
        _partitions_start,
        parse_date,
        "first partition day",
        shown="`2024-01-01`; for the demo LMS, the first day of its history",
    ),
    Variable(
        "LMS_EXECUTOR",
        "executor",
        "multiprocess",
        parse_executor,
        "how a run executes its steps: `multiprocess` (Dagster's default), `in_process`, or `celery` "
        "(see [scale-out](docs/deployment.md#scale-out))",
    ),
    Variable(
        "LMS_CELERY_BROKER_URL",
        "celery_broker_url",
        "redis://127.0.0.1:6379/0",
        parse_celery_url,
        "Celery broker, e.g. `amqp://user:password@mq.internal:5672//`",
        secret=True,
    ),
    Variable(
        "LMS_CELERY_BACKEND_URL",
        "celery_backend_url",
        "redis://127.0.0.1:6379/0",
        parse_celery_url,
        "Celery result backend (`rpc://` goes with RabbitMQ)",
        secret=True,
    ),
    Variable("LMS_CELERY_QUEUE", "celery_queue", "dagster", parse_queue_name, "Celery queue the steps are sent to"),
    Variable(
        "ZULIP_SITE",
        "zulip_site",
        None,
        parse_text,
        "the Zulip server of the bot that sends DMs, with its scheme (`https://chat.example.edu`)",
    ),
    Variable("ZULIP_EMAIL", "zulip_email", None, parse_text, "the bot's e-mail"),
    Variable("ZULIP_API_KEY", "zulip_api_key", None, parse_text, "the bot's API key", secret=True),
    Variable(
        "ZULIP_CONFIG",
        "zulip_config",
        None,
        parse_text,
        "a zuliprc (`[api]` with `site`, `email`, `key`) instead of the three above; none of the four "
        "set means dry-run: messages are rendered and logged, nothing is sent",
    ),
    # --- operational alerts (issue 15) ---
    Variable(
        "LMS_ALERT_ZULIP_STREAM",
        "alert_zulip_stream",
        None,
        parse_text,
        "Zulip channel the operational alerts go to, sent by the same bot; unset: alerts go to the run logs "
        "only (see [operations](docs/operations.md#alerts))",
    ),
    Variable("LMS_ALERT_ZULIP_TOPIC", "alert_zulip_topic", "lms-activity alerts", parse_text, "topic of the alerts"),
    Variable(
        "LMS_ALERT_LAG_MINUTES",
        "alert_lag_minutes",
        "30",
        parse_non_negative_float,
        "alert when the warehouse is this many minutes behind LMS changes (0: never)",
    ),
    Variable(
        "LMS_ALERT_BACKLOG_MINUTES",
        "alert_backlog_minutes",
        "60",
        parse_non_negative_float,
        "alert when notifications have been pending this many minutes (0: never)",
    ),
    Variable(
        "LMS_DAGSTER_UI_URL",
        "dagster_ui_url",
        "http://127.0.0.1:3000",
        parse_text,
        "the Dagster UI, for the links to runs in alerts",
    ),
    # --- mentor notification preferences and rules (issue 12) ---
    Variable(
        "LMS_NOTIFY_DEFAULT_FREQUENCY",
        "notify_default_frequency",
        "immediate",
        parse_frequency,
        "how often mentors without a preference are told: `immediate`, `hourly`, `daily`, `weekly` or `off` "
        "(see [notifications](docs/notifications.md#preferences-and-rules))",
    ),
    Variable(
        "LMS_NOTIFY_RULES",
        "notify_rules",
        None,
        parse_rules_path,
        "path of a YAML file of notification rules (skip or mark urgent by event type, course, activity, "
        "score, failures in a row); checked at start",
    ),
    # --- students at risk ---
    Variable(
        "LMS_RISK_INACTIVE_DAYS",
        "risk_inactive_days",
        "7",
        parse_positive_int,
        "days without activity in a course (with an exam not passed) that flag a student `inactive`",
    ),
    Variable(
        "LMS_RISK_DIGEST_FREQUENCY",
        "risk_digest_frequency",
        "weekly",
        lambda name, raw: parse_choice(name, raw, RISK_DIGEST_FREQUENCIES),
        "how often mentors get the at-risk digest: `immediate`, `daily` or `weekly`",
    ),
    Variable(
        "LMS_RISK_MODEL",
        "risk_model",
        "rules",
        lambda name, raw: parse_choice(name, raw, RISK_MODELS),
        "what computes `student_risk`: `rules` (explainable rules) or `learned` (logistic regression trained on the history, stored in `risk_models`)",
    ),
    # integration service (lms-activity serve)
    Variable(
        "LMS_WEBHOOK_SECRET",
        "webhook_secret",
        None,
        parse_webhook_secrets,
        "secret(s) of the LMS webhooks (`whsec_…`, comma-separated while rotating); unset: "
        "`POST /webhooks/lms` answers 503 and `lms_webhook_sensor` is off by default",
        secret=True,
    ),
)
VARIABLE_BY_FIELD: Mapping[str, Variable] = {v.field: v for v in VARIABLES}


@dataclass(frozen=True)
class Settings:
    """Every setting, parsed and validated; ``from_env`` names the variables that were set."""

    home: Path
    lms_database_url: str
    warehouse_url: str
    warehouse_schema: str
    monitor_enabled: bool
    poll_interval: int
    lookback_seconds: int
    notify_enabled: bool
    event_types: tuple[str, ...]
    notify_max_age_hours: float
    timezone: str
    partitions_start: str
    executor: str
    celery_broker_url: str
    celery_backend_url: str
    celery_queue: str
    zulip_site: str | None = None
    zulip_email: str | None = None
    zulip_api_key: str | None = field(default=None, repr=False)
    zulip_config: str | None = None
    # operational alerts (issue 15)
    alert_zulip_stream: str | None = None
    alert_zulip_topic: str = "lms-activity alerts"
    alert_lag_minutes: float = 30.0
    alert_backlog_minutes: float = 60.0
    dagster_ui_url: str = "http://127.0.0.1:3000"
    # mentor notification preferences and rules (issue 12)
    notify_default_frequency: str = "immediate"
    notify_rules: str | None = None
    # integration service (lms-activity serve)
    webhook_secret: tuple[str, ...] | None = field(default=None, repr=False)
    from_env: frozenset[str] = frozenset()
    # --- students at risk ---
    risk_inactive_days: int = 7
    risk_digest_frequency: str = "weekly"
    risk_model: str = "rules"

    @property
    def lms_url_is_default(self) -> bool:
        """No ``LMS_DATABASE_URL``: the demo LMS under ``LMS_HOME``."""
        return "LMS_DATABASE_URL" not in self.from_env

    @property
    def demo_lms_path(self) -> Path:
        return self.home / DEMO_LMS_FILE

    @property
    def default_dagster_home(self) -> Path:
        return self.home / "dagster_home"

    def is_set(self, field_name: str) -> bool:
        """Whether the variable behind ``field_name`` was set (resources then reference it as an ``EnvVar``)."""
        return VARIABLE_BY_FIELD[field_name].name in self.from_env


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment; raise :class:`ConfigError` on the first bad value."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    set_names = set()
    for variable in VARIABLES:
        raw = (env.get(variable.name) or "").strip()
        if raw:
            set_names.add(variable.name)
        values["lms_url_is_default"] = "LMS_DATABASE_URL" not in set_names
        text = raw or variable.default_text(values)
        values[variable.field] = None if text is None else variable.parse(variable.name, text)
    values.pop("lms_url_is_default")
    values["home"] = Path(values["home"]).expanduser()
    if values["executor"] == "celery" and str(values["warehouse_url"]).startswith("sqlite"):
        raise ConfigError(
            "LMS_EXECUTOR=celery needs a PostgreSQL LMS_WAREHOUSE_URL: "
            "Celery workers on other machines cannot share a SQLite file"
        )
    return Settings(**values, from_env=frozenset(set_names))


def load_variable(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """One variable's value (its default when unset), without reading the others."""
    env = os.environ if environ is None else environ
    variable = next(v for v in VARIABLES if v.name == name)
    if callable(variable.default):
        raise ValueError(f"{name}'s default depends on other variables: use load_settings()")
    text = (env.get(name) or "").strip() or variable.default
    return None if text is None else variable.parse(name, text)


def demo_history_start(path: Path) -> dt.date | None:
    """The first day of the demo LMS's history at ``path``, from its marker row (None: no demo there yet)."""
    if not path.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True) as conn:
            row = conn.execute(f"SELECT history_start FROM {DEMO_MARKER_TABLE} LIMIT 1").fetchone()
    except sqlite3.Error:  # an older demo without that column, or not a demo: the default applies
        return None
    return dt.date.fromisoformat(row[0][:10]) if row and row[0] else None


def variables_table() -> str:
    """The configuration table of the README, from :data:`VARIABLES` (``python -m lms_activity_pipeline.settings``)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for v in VARIABLES:
        shown = v.shown or (f"`{v.default}`" if isinstance(v.default, str) else "unset")
        rows.append(f"| `{v.name}` | {shown} | {v.meaning} |")
    return "\n".join(rows) + "\n"


def render_variables(text: str) -> str:
    """``text`` with the block between ``<!-- variables -->`` and ``<!-- /variables -->`` regenerated."""
    head, _, rest = text.partition("<!-- variables -->\n")
    _, _, tail = rest.partition("<!-- /variables -->")
    return f"{head}<!-- variables -->\n{variables_table()}<!-- /variables -->{tail}"


if __name__ == "__main__":  # regenerate the README's configuration table
    import sys

    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    readme.write_text(render_variables(readme.read_text()))
