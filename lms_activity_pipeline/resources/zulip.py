"""The Zulip bot that sends mentor DMs: configuration, as a Dagster resource.

Configured from ``ZULIP_SITE``/``ZULIP_EMAIL``/``ZULIP_API_KEY`` or a zuliprc at
``ZULIP_CONFIG``; with none of them the notifier runs dry. Requests go through
:class:`~lms_activity_pipeline.notify.zulip_gateway.ZulipGateway` (the official
``zulip`` client). The API key is never logged, shown or put into metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import ConfigurableResource

from lms_activity_pipeline.config import ConfigError, redact_url
from lms_activity_pipeline.domain.delivery import RetryPolicy
from lms_activity_pipeline.notify.zulip_gateway import ZulipGateway


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

    def __repr_args__(self):  # noqa: ANN204 - pydantic's repr hook
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
        return f"Zulip bot {self.email} at {redact_url(self.site)}"

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
            "config_file": str(Path(self.config_file).expanduser()) if _set(self.config_file) else None,
        }
        return ZulipGateway({k: v for k, v in options.items() if _set(v)}, self.request_timeout_seconds)


def _set(value: object) -> bool:
    return value is not None and str(value).strip() != ""
