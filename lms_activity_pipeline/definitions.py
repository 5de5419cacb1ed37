"""The Dagster code location: ``dagster dev`` loads ``defs`` from here (see ``workspace.yaml``).

Every definition lives at module level under ``defs/`` (by concern: ingest, features, notify, monitoring)
and is found there by Dagster's ``load_from_defs_folder``; resources and the executor come from
``defs/resources.py``, built from the environment read once.
"""

from __future__ import annotations

from pathlib import Path

from dagster import Definitions, load_from_defs_folder

defs: Definitions = load_from_defs_folder(path_within_project=Path(__file__).parent)
