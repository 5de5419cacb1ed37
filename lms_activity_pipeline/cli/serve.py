"""``lms-activity serve``: the integration service (REST API, webhooks, dashboard) under uvicorn."""

from __future__ import annotations

import argparse

from lms_activity_pipeline.cli.args import positive
from lms_activity_pipeline.settings import Settings

#: What uvicorn imports in each worker process (``--workers N``).
APP_FACTORY = "lms_activity_pipeline.service.app:create_app"
#: How long an idle kept-alive connection stays open.
KEEP_ALIVE_SECONDS = 75


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    serve = sub.add_parser("serve", parents=[common], help="run the REST API, webhook receiver and dashboard")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=positive("--port"), default=8080, help="port (default 8080)")
    serve.add_argument("--workers", type=positive("--workers"), default=1, help="worker processes (default 1)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from lms_activity_pipeline.warehouse.store import Warehouse

    Warehouse(settings.warehouse_url, settings.warehouse_schema).migrate()  # a bad URL stops here, in one line
    print(f"Serving on http://{args.host}:{args.port} ({args.workers} worker(s)); API docs at /docs")
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="debug" if args.verbose else "info",
        access_log=args.verbose,  # access lines carry no tokens, but stay quiet by default
        proxy_headers=True,
        # Longer than a proxy's or load balancer's idle timeout (nginx 75 s, cloud balancers 60 s), so the
        # server never closes a kept-alive connection just as a client sends on it (uvicorn's default is 5 s).
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    return 0
