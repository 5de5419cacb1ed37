"""The resources every job and sensor uses, built from the settings (``EnvVar`` for each variable that is set).

Each resource is configuration plus a way to get the library object that does the work: an
:class:`~lms_activity_pipeline.lms.reader.LMSReader`, a
:class:`~lms_activity_pipeline.warehouse.store.Warehouse`, a Zulip gateway. Secrets reach Dagster only as
``EnvVar`` references, so the UI shows the variable's name, never its value.
"""

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from dagster import (
    ConfigurableResource,
    Definitions,
    EnvVar,
    ExecutorDefinition,
    InitResourceContext,
    definitions,
    in_process_executor,
)

from lms_activity_pipeline.domain.alerts import DEFAULT_ALERTS_PER_HOUR, Thresholds
from lms_activity_pipeline.domain.delivery import RetryPolicy
from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES
from lms_activity_pipeline.domain.rules import RuleSet
from lms_activity_pipeline.errors import ConfigError
from lms_activity_pipeline.lms.reader import LMSReader
from lms_activity_pipeline.notify.alerts import AlertSender
from lms_activity_pipeline.notify.policy import Decision, NotifyPolicy
from lms_activity_pipeline.notify.request import NotifyRequest, why_no_run
from lms_activity_pipeline.notify.zulip_gateway import ZulipGateway
from lms_activity_pipeline.settings import (
    DEFAULT_WAREHOUSE_SCHEMA,
    VARIABLE_BY_FIELD,
    Settings,
    parse_event_types,
    parse_frequency,
    read_rules,
)
from lms_activity_pipeline.urls import redact_url
from lms_activity_pipeline.warehouse.outbox import Outbox, Selection
from lms_activity_pipeline.warehouse.store import Warehouse


class LMSResource(ConfigurableResource):
    """The LMS database (``LMS_DATABASE_URL``), read-only; ``profile_path`` names a JSON source profile
    for an LMS whose table and column names differ from the reference schema."""

    database_url: str
    profile_path: str | None = None

    def __repr_args__(self):
        """The URL's credentials never appear in a repr (logs, tracebacks, debuggers)."""
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "database_url" and isinstance(value, str) else value)

    def reader(self) -> LMSReader:
        """A reader on this process's shared read-only engine."""
        return LMSReader(self.database_url, self.profile_path)


class WarehouseResource(ConfigurableResource):
    """The warehouse (``LMS_WAREHOUSE_URL``); tables live in ``LMS_WAREHOUSE_SCHEMA`` on PostgreSQL.

    Set-up of a run (or sensor tick) migrates the tables once per process.
    """

    url: str
    schema_name: str = DEFAULT_WAREHOUSE_SCHEMA

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "url" and isinstance(value, str) else value)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self.store().migrate()

    def store(self) -> Warehouse:
        """The warehouse on this process's shared engine."""
        return Warehouse(self.url, self.schema_name)


class PipelineSettings(ConfigurableResource):
    """Which events are stored and notified, and the notification policy (``LMS_EVENT_TYPES_TO_MONITOR``,
    ``LMS_NOTIFY_MENTORS_ENABLED``, ``LMS_NOTIFY_MAX_AGE_HOURS``)."""

    event_types: str = ",".join(ALL_EVENT_TYPES)
    notify_enabled: bool = True
    notify_max_age_hours: float = 24.0
    # mentor notification preferences and rules (issue 12)
    notify_default_frequency: str = "immediate"
    timezone: str = "UTC"
    notify_rules: str | None = None

    @property
    def monitored_event_types(self) -> tuple[str, ...]:
        return parse_event_types("LMS_EVENT_TYPES_TO_MONITOR", self.event_types)

    def notify_policy(self) -> NotifyPolicy:
        """Default frequency, time zone and the rules read from ``LMS_NOTIFY_RULES`` (validated again)."""
        rules = read_rules("LMS_NOTIFY_RULES", self.notify_rules) if self.notify_rules else None
        return NotifyPolicy(
            default_frequency=parse_frequency("LMS_NOTIFY_DEFAULT_FREQUENCY", self.notify_default_frequency),
            timezone=self.timezone,
            rules=rules or RuleSet(),
        )

    def notify_decision(self, outbox: Outbox, now: dt.datetime) -> Decision | None:
        """What preferences and rules make of the waiting pairs now (``None``: none in force, all due)."""
        request = NotifyRequest(
            selection=Selection(self.monitored_event_types),
            max_age=dt.timedelta(hours=self.notify_max_age_hours),
            policy=self.notify_policy(),
        )
        return request.decide(outbox, now)

    def why_no_notify_run(self, outbox: Outbox, now: dt.datetime | None = None) -> str | None:
        """Why a notify run with the default config would have nothing to do now (``None``: one is due)."""
        return why_no_run(
            outbox,
            enabled=self.notify_enabled,
            event_types=self.monitored_event_types,
            max_age_hours=self.notify_max_age_hours,
            now=now or dt.datetime.now(dt.UTC),
            policy=self.notify_policy(),
        )


class RiskSettings(ConfigurableResource):
    """How ``student_risk`` is computed and told (``LMS_RISK_INACTIVE_DAYS``, ``LMS_RISK_DIGEST_FREQUENCY``,
    ``LMS_RISK_MODEL``)."""

    inactive_days: int = 7
    digest_frequency: str = "weekly"
    model: str = "rules"


class ZulipResource(ConfigurableResource):
    """Zulip server and bot credentials, request timeout and retry policy.

    Unconfigured (no site, e-mail, key or zuliprc) means dry-run: messages are
    rendered and logged, nothing is sent.
    """

    site: str | None = None
    email: str | None = None
    api_key: str | None = None
    config_file: str | None = None
    request_timeout_seconds: float = 15.0
    max_attempts: int = 3
    backoff_seconds: float = 2.0
    max_backoff_seconds: float = 60.0
    max_retry_after_seconds: float = 300.0
    #: All waits for one message (429s and backoff) stay below this, well inside the claim timeout.
    max_wait_seconds_per_message: float = 600.0
    user_cache_hours: float = 24.0
    unknown_user_cache_hours: float = 1.0

    def __repr_args__(self):
        """The API key, and credentials in the site URL, never appear in a repr (logs, tracebacks, debuggers)."""
        for name, value in super().__repr_args__():
            if name == "api_key" and value is not None:
                value = "********"
            elif name == "site" and isinstance(value, str):
                value = redact_url(value)
            yield name, value

    @property
    def is_configured(self) -> bool:
        return any(_set(v) for v in (self.site, self.email, self.api_key, self.config_file))

    def check(self) -> None:
        """Raise a one-line :class:`ConfigError` for an incomplete or missing configuration."""
        if _set(self.config_file):
            if not Path(str(self.config_file)).expanduser().is_file():
                raise ConfigError(f"ZULIP_CONFIG={self.config_file!r}: no such zuliprc file")
            return
        given = {"ZULIP_SITE": self.site, "ZULIP_EMAIL": self.email, "ZULIP_API_KEY": self.api_key}
        missing = [name for name, value in given.items() if not _set(value)]
        if missing and len(missing) < len(given):
            raise ConfigError(
                f"{', '.join(missing)} not set: set ZULIP_SITE, ZULIP_EMAIL and ZULIP_API_KEY together, "
                "or ZULIP_CONFIG to a zuliprc (or none of them for dry-run)"
            )

    def describe(self) -> str:
        """Where messages go, without the key."""
        if not self.is_configured:
            return "dry-run (no Zulip configured)"
        if _set(self.config_file):
            return f"Zulip bot from zuliprc {self.config_file}"
        return f"Zulip bot {self.email} at {redact_url(self.site or '')}"

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            backoff_seconds=self.backoff_seconds,
            max_backoff_seconds=self.max_backoff_seconds,
            max_retry_after_seconds=self.max_retry_after_seconds,
            max_total_wait_seconds=self.max_wait_seconds_per_message,
        )

    def gateway(self) -> ZulipGateway:
        """A gateway for one run (no network until the first request)."""
        self.check()
        options: dict[str, Any] = {
            "site": self.site,
            "email": self.email,
            "api_key": self.api_key,
            "config_file": str(Path(self.config_file).expanduser())
            if self.config_file and _set(self.config_file)
            else None,
        }
        return ZulipGateway({k: v for k, v in options.items() if _set(v)}, self.request_timeout_seconds)


#: All waits (backoff, Retry-After) for one alert stay below this: alerts are sent from sensor ticks.
ALERT_MAX_WAIT_SECONDS = 20.0


class AlertsResource(ConfigurableResource):
    """Operational alerts (``LMS_ALERT_*``, ``LMS_DAGSTER_UI_URL``): the channel and topic they go to (sent by
    the ``zulip`` resource's bot; no channel: run logs only), the thresholds and the link base."""

    stream: str | None = None
    topic: str = "lms-activity alerts"
    lag_minutes: float = 30.0
    backlog_minutes: float = 60.0
    ui_url: str = "http://127.0.0.1:3000"
    per_hour: int = DEFAULT_ALERTS_PER_HOUR

    def thresholds(self) -> Thresholds:
        return Thresholds(lag_minutes=self.lag_minutes, backlog_minutes=self.backlog_minutes)

    def sender(self, zulip: ZulipResource) -> AlertSender:
        """Where the alerts go; a Zulip configuration error leaves them in the run logs (never raises)."""
        channel = self.stream if _set(self.stream) else None
        gateway = None
        if channel and zulip.is_configured:
            try:
                gateway = zulip.gateway()
            except ConfigError:
                gateway = None
        # The DMs' policy, with its waits capped so a sensor tick never waits minutes on Zulip.
        policy = dataclasses.replace(
            zulip.retry_policy(),
            max_retry_after_seconds=min(zulip.max_retry_after_seconds, ALERT_MAX_WAIT_SECONDS),
            max_total_wait_seconds=min(zulip.max_wait_seconds_per_message, ALERT_MAX_WAIT_SECONDS),
        )
        return AlertSender(gateway, channel, self.topic, policy)


def _set(value: object) -> bool:
    return value is not None and str(value).strip() != ""


def resources_for(settings: Settings, *, env_vars: bool = True) -> dict[str, Any]:
    """The resources, keyed by their names. With ``env_vars`` a value whose variable is set is an
    ``EnvVar`` (resolved at run time, shown by name in the UI); without, every value is resolved (for
    code that uses the resources directly, outside a run)."""

    def value(field: str) -> Any:
        if env_vars and settings.is_set(field):
            return EnvVar(VARIABLE_BY_FIELD[field].name)
        raw = getattr(settings, field)
        return ",".join(raw) if isinstance(raw, tuple) else raw

    return {
        "lms": LMSResource(database_url=value("lms_database_url")),
        "warehouse": WarehouseResource(url=value("warehouse_url"), schema_name=value("warehouse_schema")),
        "settings": PipelineSettings(
            event_types=value("event_types"),
            notify_enabled=settings.notify_enabled,
            notify_max_age_hours=settings.notify_max_age_hours,
            notify_default_frequency=value("notify_default_frequency"),
            timezone=value("timezone"),
            notify_rules=value("notify_rules"),
        ),
        # Unset variables stay None (dry-run); the API key is only ever an EnvVar reference or a value in memory.
        "zulip": ZulipResource(
            site=value("zulip_site"),
            email=value("zulip_email"),
            api_key=value("zulip_api_key"),
            config_file=value("zulip_config"),
        ),
        "alerts": AlertsResource(
            stream=value("alert_zulip_stream"),
            topic=value("alert_zulip_topic"),
            lag_minutes=settings.alert_lag_minutes,
            backlog_minutes=settings.alert_backlog_minutes,
            ui_url=value("dagster_ui_url"),
        ),
        # students at risk
        "risk": RiskSettings(
            inactive_days=settings.risk_inactive_days,
            digest_frequency=value("risk_digest_frequency"),
            model=value("risk_model"),
        ),
    }


def executor_for(settings: Settings, *, env_vars: bool = True) -> ExecutorDefinition | None:
    """The executor of every job (``LMS_EXECUTOR``); ``None`` keeps Dagster's default (multiprocess).

    Celery's broker and backend come from the ``{"env": ...}`` config source when their variable is set
    (resolved at run time; the UI shows the variable, not a URL that may hold a password).
    """
    if settings.executor == "multiprocess":
        return None
    if settings.executor == "in_process":
        return in_process_executor
    try:
        from dagster_celery import celery_executor
    except ImportError:
        raise ConfigError(
            "LMS_EXECUTOR=celery needs dagster-celery: pip install 'lms-activity-pipeline[celery]'"
        ) from None

    def value(field: str) -> Any:
        name = VARIABLE_BY_FIELD[field].name
        return {"env": name} if env_vars and settings.is_set(field) else getattr(settings, field)

    return celery_executor.configured(
        {
            "broker": value("celery_broker_url"),
            "backend": value("celery_backend_url"),
            # Steps go to this queue; workers listen on it with `-q`.
            "config_source": {"task_default_queue": settings.celery_queue},
        },
        name="celery",
    )


@definitions
def resources() -> Definitions:
    """The resources and executor of this code location, from its settings (imported here, when Dagster loads
    the location, so the CLI can use this module before any setting is validated)."""
    from lms_activity_pipeline.defs.settings import SETTINGS

    return Definitions(resources=resources_for(SETTINGS), executor=executor_for(SETTINGS))
