"""The FastAPI app: the REST API, the webhook receiver and the dashboard over one warehouse.

Errors answer in one line: 422 names the field, an unreachable database is 503 with the reason, an
exhausted connection pool (overload) is 503 with ``Retry-After``; never a stack trace.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import psycopg2  # type: ignore[import-untyped]
import sqlalchemy as sa
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.engine import Engine
from standardwebhooks.webhooks import Webhook

from lms_activity_pipeline.errors import ConfigError
from lms_activity_pipeline.lms.reader import LMSReader
from lms_activity_pipeline.service.inbox_writer import InboxWriter
from lms_activity_pipeline.settings import Settings, load_settings
from lms_activity_pipeline.warehouse import webhook_inbox
from lms_activity_pipeline.warehouse.freshness import freshness
from lms_activity_pipeline.warehouse.poll_state import read_state
from lms_activity_pipeline.warehouse.store import Warehouse

log = logging.getLogger(__name__)


@dataclass
class Service:
    """What the routes share: the settings, the warehouse, the webhook secrets."""

    settings: Settings
    store: Warehouse
    webhook_secrets: tuple[Webhook, ...] = field(default=())
    inbox: InboxWriter = field(init=False)

    def __post_init__(self) -> None:
        self.inbox = InboxWriter(self.store)

    @property
    def engine(self) -> Engine:
        return self.store.engine

    def reader(self) -> LMSReader:
        return LMSReader(self.settings.lms_database_url)

    def health(self) -> dict[str, Any]:
        """The warehouse answers (else 503 via the handler), the lag behind the LMS, the last poll."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        state = read_state(self.engine)
        answer: dict[str, Any] = {
            "status": "ok",
            "database": "reachable",
            "last_poll_at": state.last_poll_at,
            "last_poll": state.last_outcome,
            "last_run_key": state.last_run_key,
            "webhooks": webhook_inbox.counts(self.engine),
        }
        try:
            answer["lag_seconds"] = freshness(self.reader(), self.engine).lag_seconds
        except (ConfigError, sa.exc.SQLAlchemyError, psycopg2.Error) as exc:  # PostgreSQL reads use COPY (raw)
            answer["lag_seconds"] = None
            answer["lms"] = f"unreachable: {type(exc).__name__}"
        return answer


def _one_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app for ``settings`` (default: the environment); migrates the warehouse's tables once."""
    settings = settings or load_settings()
    store = Warehouse(settings.warehouse_url, settings.warehouse_schema)
    service = Service(settings, store, tuple(Webhook(s) for s in settings.webhook_secret or ()))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Migrated at start-up, not on the first request; a database that is down is reported per request.
        try:
            store.migrate()
        except (ConfigError, sa.exc.SQLAlchemyError) as exc:
            log.warning("warehouse not migrated at start-up: %s", _one_line(exc))
        yield

    app = FastAPI(
        title="lms-activity",
        description="LMS activity events, the AI claim queue, notifications, LMS webhooks.",
        version="1",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(
                    str(p) for p in e["loc"] if p not in ("query", "body", "path") and not isinstance(p, int)
                ),
                "message": e["msg"],
            }
            for e in exc.errors()
        ]
        line = "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors)
        return JSONResponse({"detail": line, "errors": errors}, status_code=422)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, status_code=422)

    @app.exception_handler(sa.exc.OperationalError)
    @app.exception_handler(sa.exc.InterfaceError)
    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        reason = _one_line(getattr(exc, "orig", None) or exc)
        log.warning("warehouse unreachable: %s", reason)
        return JSONResponse({"detail": f"warehouse unavailable: {reason}"}, status_code=503)

    @app.exception_handler(sa.exc.TimeoutError)
    async def busy(request: Request, exc: Exception) -> JSONResponse:
        # every pooled connection is in use for longer than the pool's timeout: overload, not a bug
        log.warning("warehouse busy: %s", _one_line(exc))
        return JSONResponse(
            {"detail": "warehouse busy: no database connection free, retry later"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(ConfigError)
    async def config(request: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse({"detail": f"warehouse unavailable: {_one_line(exc)}"}, status_code=503)

    from lms_activity_pipeline.service import dashboard, rest, webhooks

    app.include_router(rest.router)
    app.include_router(webhooks.router)
    app.include_router(dashboard.router)
    return app
