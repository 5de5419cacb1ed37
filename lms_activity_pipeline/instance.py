"""The Dagster instance the CLI records its runs in: ``DAGSTER_HOME`` or the project's local default."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dagster import DagsterInstance

from lms_activity_pipeline.config import Settings


def dagster_home(settings: Settings) -> Path:
    """``DAGSTER_HOME`` when set, else ``$LMS_HOME/dagster_home`` (created, with the repo's dagster.yaml)."""
    configured = os.environ.get("DAGSTER_HOME", "").strip()
    home = Path(configured).expanduser() if configured else settings.default_dagster_home
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = home / "dagster.yaml"
    if not configured and not instance_yaml.exists():
        project_yaml = Path.cwd() / "dagster.yaml"
        if project_yaml.exists():
            shutil.copyfile(project_yaml, instance_yaml)
        else:
            instance_yaml.write_text("telemetry:\n  enabled: false\n")
    return home


def get_instance(settings: Settings) -> DagsterInstance:
    """The persistent instance; ``dagster dev`` with the same DAGSTER_HOME shows the CLI's runs."""
    home = dagster_home(settings)
    os.environ["DAGSTER_HOME"] = str(home)
    return DagsterInstance.get()
