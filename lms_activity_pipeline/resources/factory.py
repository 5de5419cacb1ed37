"""Resources built from the environment: ``EnvVar`` where a variable is set, else its default."""

from __future__ import annotations

import os
from typing import Any

from dagster import EnvVar

from lms_activity_pipeline.config import Settings
from lms_activity_pipeline.resources.lms import LMSResource
from lms_activity_pipeline.resources.settings import PipelineSettings
from lms_activity_pipeline.resources.warehouse import WarehouseResource
from lms_activity_pipeline.resources.zulip import ZulipResource


def build_resources(settings: Settings, *, env_vars: bool = True) -> dict[str, Any]:
    """The resources every job uses, keyed by their resource names.

    With ``env_vars`` a value comes from ``EnvVar(name)`` when that variable is
    set (shown as such in the UI, resolved at run time), else from ``settings``.
    Without, every value is the resolved one (for code that uses the resources
    directly, outside a run).
    """

    def env_or(name: str, default: str) -> str:
        return EnvVar(name) if env_vars and os.environ.get(name, "").strip() else default

    def optional_env(name: str) -> str | None:
        value = os.environ.get(name, "").strip() or None
        return EnvVar(name) if env_vars and value else value

    return {
        "lms": LMSResource(database_url=env_or("LMS_DATABASE_URL", settings.lms_database_url)),
        "warehouse": WarehouseResource(
            url=env_or("LMS_WAREHOUSE_URL", settings.warehouse_url),
            schema_name=env_or("LMS_WAREHOUSE_SCHEMA", settings.warehouse_schema),
        ),
        "settings": PipelineSettings(
            event_types=env_or("LMS_EVENT_TYPES_TO_MONITOR", ",".join(settings.event_types)),
            notify_enabled=settings.notify_enabled,
            notify_max_age_hours=settings.notify_max_age_hours,
            lookback_seconds=settings.lookback_seconds,
        ),
        # Unset variables stay None (dry-run); the API key is only ever an EnvVar reference or a value in memory.
        "zulip": ZulipResource(
            site=optional_env("ZULIP_SITE"),
            email=optional_env("ZULIP_EMAIL"),
            api_key=optional_env("ZULIP_API_KEY"),
            config_file=optional_env("ZULIP_CONFIG"),
        ),
    }
