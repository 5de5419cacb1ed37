"""The Dagster instance the CLI records its runs in, and the code location's definitions."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from dagster import DagsterInstance, Definitions

from lms_activity_pipeline.settings import Settings

#: The instance configuration the CLI writes when it makes its own Dagster home.
MINIMAL_INSTANCE_YAML = "telemetry:\n  enabled: false\n"


def dagster_home(settings: Settings) -> Path:
    """Where the CLI's runs are recorded, created if missing:

    - ``DAGSTER_HOME`` when set;
    - else the current directory when it holds a ``dagster.yaml`` (the repository root, where
      ``DAGSTER_HOME=$PWD dagster dev`` reads the same instance, so the UI shows the CLI's runs);
    - else ``$LMS_HOME/dagster_home``, with a minimal ``dagster.yaml``.
    """
    configured = os.environ.get("DAGSTER_HOME", "").strip()
    if configured:
        home = Path(configured).expanduser().resolve()
        home.mkdir(parents=True, exist_ok=True)
        return home
    if (Path.cwd() / "dagster.yaml").is_file():
        return Path.cwd().resolve()
    home = settings.default_dagster_home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        (home / "dagster.yaml").write_text(MINIMAL_INSTANCE_YAML)
    return home


def get_instance(settings: Settings) -> DagsterInstance:
    """The persistent instance (``dagster dev`` with the same ``DAGSTER_HOME`` shows the CLI's runs)."""
    os.environ["DAGSTER_HOME"] = str(dagster_home(settings))
    return DagsterInstance.get()


def load_definitions(settings: Settings) -> Definitions:
    """The code location's definitions, as ``dagster dev`` loads them, for ``settings``.

    ``defs/`` reads the settings when it is imported; imported earlier in this process with other settings
    (``lms-activity`` called again in one process, as tests do), it is imported afresh.
    """
    loaded = sys.modules.get("lms_activity_pipeline.defs.settings")
    if loaded is not None and settings != loaded.SETTINGS:
        for name in [
            m
            for m in sys.modules
            if m == "lms_activity_pipeline.definitions" or m.startswith("lms_activity_pipeline.defs.")
        ]:
            del sys.modules[name]
    return importlib.import_module("lms_activity_pipeline.definitions").defs
