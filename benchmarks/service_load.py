"""Load on the integration service: N concurrent clients for D seconds on the loopback, PostgreSQL warehouse.

    python benchmarks/service_load.py [--clients 200] [--seconds 60] [--workers 2] [--rate 1] [--server URL]

Starts ``lms-activity serve`` (uvicorn, ``--workers``) on a fresh PostgreSQL warehouse seeded with
10,000 events, then drives ``--clients`` concurrent asyncio clients at ``GET /api/v1/events?limit=50``
(read token) and at signed ``POST /webhooks/lms`` (a new webhook-id each), in two kinds of bounded
loops per endpoint:

- paced: each client sends ``--rate`` requests a second (exponential gaps, so ``clients x rate`` on
  average), latency counted from when the request was due (a late send counts as waiting);
- saturating: each client sends its next request as soon as the previous one is answered: the most
  the service serves, and how long 200 waiting clients wait (latency = clients / throughput).

Prints requests/s, p50/p99 latency, 5xx and other errors per phase, and the CPU time the load
generator itself used (it shares the machine's cores with the server). The load comes from wrk
(``apt-get install wrk``; see ``benchmarks/wrk_load.py``) when it is installed, else from httpx
asyncio clients in this process, which cost the machine about a core at 200 requests a second.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from standardwebhooks.webhooks import Webhook

from benchmarks import wrk_load
from benchmarks.common import DEFAULT_SERVER, Report, database_url, ensure_database
from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse import tokens
from lms_activity_pipeline.warehouse.store import Warehouse

SECRET = "whsec_" + base64.b64encode(b"service-load-benchmark-secret!!").decode()
EVENTS = 10_000


def seed(url: str) -> str:
    """Fresh tables, EVENTS events, a read token."""
    store = Warehouse(url, "lms_activity")
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS lms_activity CASCADE")
    store.migrate()
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [
        {
            "event_key": f"exam:{i}:{ALL_EVENT_TYPES[i % 7]}",
            "event_type": ALL_EVENT_TYPES[i % 7],
            "student_id": i % 500,
            "activity_id": 1,
            "activity_metadata": {"score": i % 50},
            "timestamp": t0 + dt.timedelta(seconds=i),
        }
        for i in range(EVENTS)
    ]
    with store.engine.begin() as conn:
        conn.execute(wh.lms_activity_events.insert(), rows)
    return tokens.create_token(store.engine, "bench", "read")


async def client_loop(
    client: httpx.AsyncClient,
    request: dict,
    until: float,
    latencies: list[float],
    errors: dict[str, int],
    rate: float,
    pacing: random.Random,
) -> None:
    due = time.perf_counter() + (pacing.expovariate(rate) if rate else 0)
    while due < until:
        if rate:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        kind, args = request["kind"], dict(request["args"])
        if kind == "webhook":
            wid = f"msg_{uuid.uuid4().hex}"
            body = json.dumps({"type": "attempt.changed", "data": {"id": 1}})
            now = dt.datetime.now(dt.UTC)
            args["content"] = body
            args["headers"] = {
                "webhook-id": wid,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": request["hook"].sign(wid, now, body),
                "content-type": "application/json",
            }
        start = due if rate else time.perf_counter()
        try:
            answer = await client.request(**args)
            code = answer.status_code
        except httpx.HTTPError as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            continue
        finally:
            due = due + pacing.expovariate(rate) if rate else time.perf_counter()
        latencies.append(time.perf_counter() - start)
        if code >= 300:
            key = "5xx" if code >= 500 else str(code)
            errors[key] = errors.get(key, 0) + 1


async def phase(
    base: str, request: dict, clients: int, seconds: float, rate: float
) -> tuple[int, list[float], dict[str, int]]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    pacing = random.Random(7)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        until = time.perf_counter() + seconds
        await asyncio.gather(
            *(client_loop(client, request, until, latencies, errors, rate, pacing) for _ in range(clients))
        )
    return len(latencies), latencies, errors


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values[0] if values else 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=1.0, help="requests a second per client in the paced phases")
    parser.add_argument(
        "--generator",
        choices=["wrk", "python"],
        default="wrk" if wrk_load.available() else "python",
        help="wrk (C, Debian's package; the default when installed) or httpx asyncio clients in this process",
    )
    args = parser.parse_args()
    url = ensure_database(database_url(args.server, "lms_service_bench"))
    token = seed(url)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LMS_WAREHOUSE_URL": url, "LMS_DATABASE_URL": url, "LMS_WEBHOOK_SECRET": SECRET}
    cmd = [
        sys.executable,
        "-m",
        "lms_activity_pipeline.cli",
        "serve",
        "--port",
        str(port),
        "--workers",
        str(args.workers),
    ]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        report = Report(
            f"lms-activity serve: {args.clients} clients x {args.seconds:g} s per phase, {args.workers} workers, "
            f"paced at {args.rate:g} req/s per client, then saturating; load from {args.generator}"
        )
        phases = {
            "GET /api/v1/events?limit=50": {
                "kind": "get",
                "args": {
                    "method": "GET",
                    "url": "/api/v1/events",
                    "params": {"limit": 50},
                    "headers": {"Authorization": f"Bearer {token}"},
                },
            },
            "POST /webhooks/lms (signed)": {
                "kind": "webhook",
                "args": {"method": "POST", "url": "/webhooks/lms"},
                "hook": Webhook(SECRET),
            },
        }
        for name, request in phases.items():
            for rate in (args.rate, 0.0):
                kind = "paced" if rate else "saturating"
                cpu = time.process_time()
                children = resource.getrusage(resource.RUSAGE_CHILDREN)
                if args.generator == "wrk":
                    mode = "webhook" if request["kind"] == "webhook" else "events"
                    result = wrk_load.run(
                        base,
                        mode=mode,
                        clients=args.clients,
                        seconds=args.seconds,
                        rate=rate,
                        token=token,
                        secret=SECRET,
                    )
                    rps, p50, p99, errors = result.rate, result.p50_ms, result.p99_ms, result.errors
                else:
                    done, latencies, errors = asyncio.run(phase(base, request, args.clients, args.seconds, rate))
                    rps, p50, p99 = (
                        done / args.seconds,
                        percentile(latencies, 50) * 1000,
                        percentile(latencies, 99) * 1000,
                    )
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                used = (
                    time.process_time()
                    - cpu
                    + (after.ru_utime + after.ru_stime)
                    - (children.ru_utime + children.ru_stime)
                )
                report.add(
                    f"{name}, {kind}",
                    f"{rps:,.0f} req/s",
                    f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, errors {errors or 'none'}; "
                    f"load generator ({args.generator}) CPU {100 * used / args.seconds:.0f}% of a core",
                )
        report.print()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
