"""``lms-activity``: the old management command's options (DESIGN.md §7) over Dagster runs."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from dagster import BetaWarning, PreviewWarning

from lms_activity_pipeline.config import ConfigError, Settings, load_settings, parse_event_types, redact_url

log = logging.getLogger("lms_activity")


def _positive(name: str):  # noqa: ANN202 - argparse type factory
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {value!r}") from None
        if number < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {number}")
        return number

    return parse


def _timestamp(value: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--now must be an ISO-8601 time, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true", help="show Dagster's run logs and debug output")
    parser = argparse.ArgumentParser(
        prog="lms-activity", description="LMS activity pipeline: demo LMS and live monitoring.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", parents=[common], help="create or refresh the demo LMS")
    demo.add_argument("--students", type=_positive("--students"), default=50, help="number of students (default 50)")
    demo.add_argument("--days", type=_positive("--days"), default=14, help="days of history up to now (default 14)")
    demo.add_argument("--seed", type=int, default=42, help="random seed; same seed, same LMS (default 42)")
    demo.add_argument("--now", type=_timestamp, help="anchor time, ISO-8601 (default: now); pins every timestamp for reproducible LMSs")
    demo.add_argument(
        "--force",
        action="store_true",
        help="replace the demo's tables even in a database holding other tables (those are left as they are); "
        "without it, only an empty database or an earlier demo is written",
    )

    monitor = sub.add_parser("monitor", parents=[common], help="poll the LMS, ingest what changed, notify mentors")
    mode = monitor.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="one poll: ingest what changed, then notify")
    mode.add_argument("--daemon", action="store_true", help="poll forever; SIGINT/SIGTERM stop cleanly")
    mode.add_argument("--process-pending", action="store_true", help="retry pending/failed notifications")
    mode.add_argument("--stats", action="store_true", help="counts, lag, pending, failures")
    monitor.add_argument("--interval", type=_positive("--interval"), help="seconds between polls (default LMS_ACTIVITY_POLL_INTERVAL)")
    monitor.add_argument("--event-types", help="with --process-pending: only these comma-separated event types")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        warnings.filterwarnings("ignore", category=BetaWarning)
        warnings.filterwarnings("ignore", category=PreviewWarning)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        settings = load_settings()
        if args.command == "demo":
            return _demo(settings, args)
        return _monitor(settings, args)
    except ConfigError as exc:
        print(f"lms-activity: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from lms_activity_pipeline.lms.demo import NotADemoDatabase, generate_demo_lms

    url = settings.lms_database_url
    try:
        summary = generate_demo_lms(
            url, students=args.students, days=args.days, seed=args.seed, now=args.now, force=args.force
        )
    except NotADemoDatabase as exc:
        raise ConfigError(
            f"LMS_DATABASE_URL={redact_url(url)} is not a demo LMS: {exc}; nothing was changed "
            "(point LMS_DATABASE_URL at an empty database, or pass --force to replace the demo tables there)"
        ) from None
    print(f"Demo LMS ready at {redact_url(url)} ({summary.seconds:.1f} s):")
    for name in ("students", "mentors", "courses", "exams", "contents", "mentor_assignments", "attempts", "content_attempts"):
        print(f"  {name:<20} {getattr(summary, name):>10,}")
    return 0


def _ensure_demo_lms(settings: Settings) -> None:
    """With no LMS_DATABASE_URL, the first run creates the demo LMS so the quickstart is one command."""
    if settings.lms_url_is_default and not settings.demo_lms_path.exists():
        from lms_activity_pipeline.lms.demo import generate_demo_lms

        print(f"No LMS_DATABASE_URL set and no demo LMS yet: creating one at {settings.demo_lms_path}")
        generate_demo_lms(settings.lms_database_url)


def _monitor(settings: Settings, args: argparse.Namespace) -> int:
    from lms_activity_pipeline.definitions import build_definitions
    from lms_activity_pipeline.instance import get_instance
    from lms_activity_pipeline.monitoring.service import Monitor
    from lms_activity_pipeline.resources.factory import build_resources

    if args.event_types and not args.process_pending:
        raise ConfigError("--event-types only applies to --process-pending")
    if args.interval and not args.daemon:
        raise ConfigError("--interval only applies to --daemon")
    # Every outside thing is checked before anything is created (demo LMS, Dagster home), so a
    # configuration error is the only line printed.
    resources = build_resources(settings, env_vars=False)
    resources["zulip"].check()
    _ = resources["warehouse"].engine  # reachable, and migrated
    _ensure_demo_lms(settings)  # only with the default LMS URL
    resources["lms"].check()
    defs = build_definitions(settings)
    instance = get_instance(settings)
    level = "DEBUG" if args.verbose else "WARNING"
    run_config = {"loggers": {"console": {"config": {"log_level": level}}}}
    monitor = Monitor(settings, defs, instance, run_config=run_config, resources=resources)

    if args.stats:
        _print_stats(monitor.stats())
        return 0
    if args.process_pending:
        event_types = parse_event_types("--event-types", args.event_types) if args.event_types else None
        return _process_pending(monitor, event_types)
    if args.once:
        outcome = monitor.poll_once()
        _print_outcome(outcome)
        if outcome.success:
            _print_stats(monitor.stats(), brief=True)
        return 0 if outcome.all_succeeded else 1
    interval = args.interval or settings.poll_interval
    print(f"Monitoring {redact_url(settings.lms_database_url)} every {interval} s (Ctrl-C or SIGTERM to stop)")
    monitor.run_forever(interval, _print_outcome)
    print("Stopped.")
    return 0


def _process_pending(monitor: Any, event_types: tuple[str, ...] | None) -> int:
    """Retry pending and failed notifications (uncertain deliveries included) in one recorded run."""
    which = ", ".join(event_types) if event_types else "all monitored event types"
    print(f"Processing pending and failed notifications ({which}) through {monitor.zulip.describe()}")
    outcome = monitor.notify(event_types, retry_all_failed=True)
    _print_notify(outcome)
    return 0 if outcome.success else 1


def _print_notify(outcome: Any) -> None:
    if not outcome.success:
        print(f"  notify run {outcome.run_id}: FAILED (open pairs stay in lms_event_log; see the run's logs)")
        return
    meta = outcome.summary
    counts = ", ".join(f"{meta.get(k, 0)} {k}" for k in ("sent", "skipped", "failed", "dry_run"))
    line = f"  notify run {outcome.run_id}: {counts}; {meta.get('messages', 0)} messages to {meta.get('mentors', 0)} mentors"
    print(f"{line}; {meta.get('open_pairs') or str(meta.get('open_pairs_left', 0)) + ' pairs still open'}")
    if meta.get("stopped_early"):
        print(f"  stopped early: {meta['stopped_early']} (the rest waits for the next run)")


def _print_outcome(outcome: Any) -> None:
    if outcome.plan is None:
        print(f"Poll: {outcome.message}")
    else:
        state = "stored" if outcome.success else "FAILED (cursor not advanced; the next poll retries)"
        print(f"Poll: {outcome.message}\n  run {outcome.run_id}: {state}")
    for line in outcome.warnings:
        print(f"  warning: {line}")
    if outcome.events:
        meta = outcome.events
        print(
            f"  lms_activity_events: {meta.get('rows_inserted', 0)} new, {meta.get('rows_updated', 0)} changed, "
            f"{meta.get('rows_unchanged', 0)} unchanged, {meta.get('notifications_enqueued', 0)} notifications enqueued"
        )
    if outcome.rejected:
        steps = ", ".join(f"{asset} {n}" for asset, n in outcome.rejected.items())
        print(f"  LMS rows rejected: {outcome.rows_rejected} ({steps}; reasons in each step's rejected_preview)")
    if outcome.notify is not None:
        _print_notify(outcome.notify)


def _print_stats(stats: dict[str, Any], brief: bool = False) -> None:
    from tabulate import tabulate

    rows = [(t, stats["events_total"][t], stats["events_24h"][t]) for t in stats["events_total"]]
    rows.append(("total", sum(stats["events_total"].values()), sum(stats["events_24h"].values())))
    print(tabulate(rows, headers=["event type", "events", "last 24 h"], tablefmt="simple"))
    if brief:
        return
    lag = stats["lag_seconds"]
    print(f"newest event:       {stats['newest_event'] or '-'}")
    print(f"newest LMS change:  {stats['lms_newest_change'] or '-'}")
    pending = f" (oldest LMS change not in lms_activity_events: {stats['oldest_pending_change']})" if lag else ""
    print(f"lag behind LMS:     {'-' if lag is None else f'{lag:.0f} s'}{pending}")
    if stats["staged_not_in_events"]:
        print(
            f"not in events yet:  {stats['staged_not_in_events']} staged rows "
            f"({stats['staged_rejected']} rejected by lms_activity_events, the rest not classified yet)"
        )
    if stats["future_rows"]:
        print(
            f"rows from future:   {stats['future_rows']} LMS rows dated after the LMS's now(), up to "
            f"{stats['future_ahead_seconds']:.0f} s ahead ({stats['future_rows_not_in_events']} not in events yet)"
        )
    notes = stats["notifications"]
    print("notifications:      " + ", ".join(f"{k} {v}" for k, v in notes.items()))
    print(f"last CLI poll:      {stats['last_poll_at'] or 'never'} (run {stats['last_run_id'] or '-'}, {stats['last_run_status'] or '-'})")
    last = stats["last_ingest"]
    described = f"{last['started_at']} by {last['trigger']} (run {last['run_id']}, {last['status']})" if last else "never"
    print(f"last ingest run:    {described}")


if __name__ == "__main__":
    raise SystemExit(main())
