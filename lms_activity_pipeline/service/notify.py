"""The dashboard's "retry failed notifications": the outbox worker run as ``monitor --process-pending`` runs it.

The same :class:`~lms_activity_pipeline.notify.notifier.Notifier` and request (every failed pair,
uncertain ones looked up on Zulip first) as the ``send_mentor_notifications`` op, without Dagster.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from pathlib import Path
from typing import Any

from lms_activity_pipeline.domain.delivery import RetryPolicy
from lms_activity_pipeline.lms.reader import LMSReader
from lms_activity_pipeline.notify.notifier import Notifier, NotifySummary, ZulipSetup
from lms_activity_pipeline.notify.request import NotifyRequest
from lms_activity_pipeline.notify.zulip_gateway import ZulipGateway
from lms_activity_pipeline.settings import Settings
from lms_activity_pipeline.warehouse.outbox import Selection
from lms_activity_pipeline.warehouse.store import Warehouse

log = logging.getLogger(__name__)
REQUEST_TIMEOUT_SECONDS = 15.0


def zulip_setup(settings: Settings) -> ZulipSetup | None:
    """The bot of ``ZULIP_*`` (None: dry-run), with the pipeline's default retry policy."""
    options: dict[str, Any] = {
        "site": settings.zulip_site,
        "email": settings.zulip_email,
        "api_key": settings.zulip_api_key,
        "config_file": str(Path(settings.zulip_config).expanduser()) if settings.zulip_config else None,
    }
    options = {k: v for k, v in options.items() if v}
    if not options:
        return None
    return ZulipSetup(ZulipGateway(options, REQUEST_TIMEOUT_SECONDS), RetryPolicy())


def retry_failed(settings: Settings, store: Warehouse, who: str) -> NotifySummary:
    """Send pending and every failed pair of the monitored event types now."""
    request = NotifyRequest(
        selection=Selection(settings.event_types, retry_all_failed=True),
        enabled=settings.notify_enabled,
        max_age=dt.timedelta(hours=settings.notify_max_age_hours),
    )
    notifier = Notifier(
        store.outbox(),
        LMSReader(settings.lms_database_url).users,
        zulip_setup(settings),
        run_id=f"dashboard-{who}-{uuid.uuid4().hex[:8]}",
        log=log,
    )
    return notifier.run(request)
