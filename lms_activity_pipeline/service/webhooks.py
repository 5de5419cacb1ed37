"""``POST /webhooks/lms``: Standard Webhooks verification, then one row in ``lms_webhook_inbox``.

The signature (``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``) is checked with the
``standardwebhooks`` library against each secret of ``LMS_WEBHOOK_SECRET`` (several while rotating); it
refuses timestamps more than 5 minutes off. A repeated ``webhook-id`` answers 200 and records nothing.
The receiver only records (webhooks arriving together share one transaction, see
:mod:`~lms_activity_pipeline.service.inbox_writer`): the next poll ingests the announced row.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from lms_activity_pipeline.warehouse import webhook_inbox
from lms_activity_pipeline.warehouse.webhook_inbox import Received

router = APIRouter()


def verify(secrets: tuple[Webhook, ...], body: bytes, headers: dict[str, str]) -> None:
    """Raise 401 unless one secret verifies the body and headers (timestamp within 5 minutes)."""
    reason = "missing webhook-id, webhook-timestamp or webhook-signature header"
    for hook in secrets:
        try:
            hook.verify(body, headers, json_parse=False)
            return
        except WebhookVerificationError as exc:
            reason = str(exc)
            if "timestamp" in reason.lower() or "header" in reason.lower():
                break  # the same for every secret
        except (ValueError, TypeError):  # a malformed signature entry (no "v1," or bad base64)
            reason = "malformed webhook-signature header"
            break
    raise HTTPException(401, f"webhook refused: {reason}")


def parse_body(body: bytes) -> tuple[str, int]:
    """The announced table and row id, or 422 naming the field."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        raise HTTPException(422, "body: not JSON") from None
    kind = data.get("type") if isinstance(data, dict) else None
    if kind not in webhook_inbox.SOURCES:
        raise HTTPException(422, f"type: must be one of {', '.join(webhook_inbox.SOURCES)}")
    row = data.get("data")
    row_id = row.get("id") if isinstance(row, dict) else None
    if isinstance(row_id, bool) or not isinstance(row_id, int) or row_id < 0:
        raise HTTPException(422, "data.id: must be a whole number >= 0")
    return webhook_inbox.SOURCES[kind], row_id


@router.post("/webhooks/lms", status_code=200)
async def receive(request: Request) -> dict[str, Any]:
    service = request.app.state.service
    if not service.webhook_secrets:
        raise HTTPException(503, "webhooks are not configured: LMS_WEBHOOK_SECRET is not set")
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    verify(service.webhook_secrets, body, headers)
    source, row_id = parse_body(body)
    webhook_id = headers["webhook-id"][:200]
    recorded = await service.inbox.record(Received(webhook_id, source, row_id, dt.datetime.now(dt.UTC)))
    return {"recorded": recorded, "webhook_id": webhook_id}
