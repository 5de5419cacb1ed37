"""``lms-activity monitor``: one poll, polling forever, retrying notifications, or the statistics."""

from __future__ import annotations

import argparse
import datetime as dt

from lms_activity_pipeline.cli import output
from lms_activity_pipeline.cli.args import positive
from lms_activity_pipeline.errors import ConfigError
from lms_activity_pipeline.settings import Settings, parse_event_types
from lms_activity_pipeline.urls import redact_url


def add_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    monitor = sub.add_parser("monitor", parents=[common], help="poll the LMS, ingest what changed, notify mentors")
    mode = monitor.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="one poll: ingest what changed, then notify")
    mode.add_argument("--daemon", action="store_true", help="poll forever; SIGINT/SIGTERM stop cleanly")
    mode.add_argument("--process-pending", action="store_true", help="retry pending/failed notifications")
    mode.add_argument("--stats", action="store_true", help="counts, lag, pending, failures")
    monitor.add_argument(
        "--interval", type=positive("--interval"), help="seconds between polls (default LMS_ACTIVITY_POLL_INTERVAL)"
    )
    monitor.add_argument("--event-types", help="with --process-pending: only these comma-separated event types")


def progress(line: str) -> None:
    """A poll's line, or the first line of a run's log message, as it happens."""
    first = line.splitlines()[0] if line else line
    print(first if first.startswith(("Poll:", "  ")) else f"    {first}")


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.event_types and not args.process_pending:
        raise ConfigError("--event-types only applies to --process-pending")
    if args.interval and not args.daemon:
        raise ConfigError("--interval only applies to --daemon")
    event_types = parse_event_types("--event-types", args.event_types) if args.event_types else None

    from lms_activity_pipeline.cli.instance import get_instance, load_definitions
    from lms_activity_pipeline.cli.poller import Monitor
    from lms_activity_pipeline.cli.stats import collect, print_event_counts, print_stats
    from lms_activity_pipeline.defs.resources import resources_for
    from lms_activity_pipeline.lms.demo import ensure_demo_lms
    from lms_activity_pipeline.notify.request import NotifyRequest
    from lms_activity_pipeline.warehouse.outbox import Selection
    from lms_activity_pipeline.warehouse.stats import event_stats

    # Every outside thing is checked before anything is created (demo LMS, Dagster home), so a configuration
    # error is the only line printed.
    resources = resources_for(settings, env_vars=False)
    resources["zulip"].check()
    store = resources["warehouse"].store()
    store.migrate()
    if settings.lms_url_is_default and not settings.demo_lms_path.exists():
        print(f"No LMS_DATABASE_URL set and no demo LMS yet: creating one at {settings.demo_lms_path}")
        ensure_demo_lms(settings)
    reader = resources["lms"].reader()
    reader.check()
    instance = get_instance(settings)
    level = "DEBUG" if args.verbose else "WARNING"
    monitor = Monitor(
        load_definitions(settings),
        instance,
        resources,
        run_config={"loggers": {"console": {"config": {"log_level": level}}}},
        on_log=None if args.verbose else progress,
    )

    if args.stats:
        pipeline = resources["settings"]
        request = NotifyRequest(
            selection=Selection(pipeline.monitored_event_types),
            max_age=dt.timedelta(hours=pipeline.notify_max_age_hours),
            policy=pipeline.notify_policy(),
        )
        print_stats(collect(reader, store, instance, request=request))
        return 0
    if args.process_pending:
        which = ", ".join(event_types) if event_types else "all monitored event types"
        print(f"Processing pending and failed notifications ({which}) through {resources['zulip'].describe()}")
        outcome = monitor.process_pending(event_types)
        output.print_notify(outcome)
        return 0 if outcome.success else 1
    if args.once:
        poll = monitor.poll_once()
        output.print_poll(poll, lines=args.verbose)
        if poll.all_succeeded:
            print_event_counts(event_stats(store.engine, dt.datetime.now(dt.UTC)))
        return 0 if poll.all_succeeded else 1
    interval = args.interval or settings.poll_interval
    print(f"Monitoring {redact_url(settings.lms_database_url)} every {interval} s (Ctrl-C or SIGTERM to stop)")
    from lms_activity_pipeline.warehouse import webhook_inbox

    monitor.run_forever(
        interval,
        lambda poll: output.print_poll(poll, lines=args.verbose),
        wake=lambda: webhook_inbox.has_pending(store.engine),  # an LMS webhook: poll now, not at the interval
    )
    print("Stopped.")
    return 0
