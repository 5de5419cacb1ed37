"""Pipeline behaviour settings (which events, notification policy) as a Dagster resource."""

from __future__ import annotations

from dagster import ConfigurableResource

from lms_activity_pipeline.config import parse_event_types
from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES


class PipelineSettings(ConfigurableResource):
    """``LMS_EVENT_TYPES_TO_MONITOR``, ``LMS_NOTIFY_*`` and the late-row lookback
    (``LMS_ACTIVITY_LOOKBACK_SECONDS``; ``lms-activity monitor`` reads it here, the sensor from the
    settings the code location loaded, the same value)."""

    event_types: str = ",".join(ALL_EVENT_TYPES)
    notify_enabled: bool = True
    notify_max_age_hours: float = 24.0
    lookback_seconds: int = 300

    @property
    def monitored_event_types(self) -> tuple[str, ...]:
        return parse_event_types("LMS_EVENT_TYPES_TO_MONITOR", self.event_types)
