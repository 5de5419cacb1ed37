"""The settings this code location was loaded with: the environment, read once (see ``settings.py``)."""

from __future__ import annotations

from lms_activity_pipeline.settings import Settings, load_settings

SETTINGS: Settings = load_settings()
