"""The Dagster code location: ``dagster dev`` loads ``defs`` from here (see ``workspace.yaml``).

Every definition lives at module level under ``defs/`` (by concern: ingest, features, notify, monitoring)
and is found there by Dagster's ``load_from_defs_folder``; resources and the executor come from
``defs/resources.py``, built from the environment read once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from dagster import Definitions, load_from_defs_folder

defs: Definitions = load_from_defs_folder(path_within_project=Path(__file__).parent)

# Resolved once here (Dagster caches it on ``defs``): binding resources to ``lms_webhook_sensor``'s jobs makes
# Dagster 1.13 copy the sensor with ``owners=[]``, which it reports as a beta parameter in use, noise that
# `dagster dev` would print on every load.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"Parameter `owners` of initializer `SensorDefinition\.__init__`")
    defs.get_repository_def()
