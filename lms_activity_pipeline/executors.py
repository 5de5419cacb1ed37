"""The executor of every job, chosen by ``LMS_EXECUTOR`` (DESIGN.md §10: scale out on Dagster's own engines).

``celery`` hands each step to a Celery worker through dagster-celery; the
package is imported only then, so installs without the ``celery`` extra work.
"""

from __future__ import annotations

import os
from typing import Any

from dagster import ExecutorDefinition, in_process_executor

from lms_activity_pipeline.config import ConfigError, Settings


def build_executor(settings: Settings, *, env_vars: bool = True) -> ExecutorDefinition | None:
    """The executor for ``Definitions(executor=...)``; ``None`` keeps Dagster's default (multiprocess).

    As for the resources, the broker and backend come from the ``{"env": ...}``
    config source when their variable is set (resolved at run time, and the UI
    shows the variable, not a URL that may hold a password), else the defaults.
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

    def env_or(name: str, default: str) -> Any:
        return {"env": name} if env_vars and os.environ.get(name, "").strip() else default

    return celery_executor.configured(
        {
            "broker": env_or("LMS_CELERY_BROKER_URL", settings.celery_broker_url),
            "backend": env_or("LMS_CELERY_BACKEND_URL", settings.celery_backend_url),
            # Steps go to this queue; workers listen on it with `-q`.
            "config_source": {"task_default_queue": settings.celery_queue},
        },
        name="celery",
    )
