"""``lms-activity``: the old Django command's options over Dagster runs; one module per command."""

from __future__ import annotations

import argparse
import io
import logging
import sys
import warnings
from collections.abc import Sequence

from lms_activity_pipeline.cli import demo, monitor, prefs, serve, token
from lms_activity_pipeline.cli import risk as risk_command
from lms_activity_pipeline.errors import ConfigError
from lms_activity_pipeline.settings import load_settings

#: Each command: its module adds its parser and runs it (``add_parser(sub, common)``, ``run(settings, args)``).
COMMANDS = {
    "demo": demo,
    "monitor": monitor,
    # integration service
    "serve": serve,
    "token": token,
}
COMMANDS["prefs"] = prefs  # mentor notification preferences (issue 12)
# students at risk
COMMANDS["risk"] = risk_command


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", "-v", action="store_true", help="show Dagster's run logs and debug output")
    parser = argparse.ArgumentParser(
        prog="lms-activity", description="LMS activity pipeline: demo LMS and live monitoring.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows as it happens, also through a pipe
    if not args.verbose:
        from dagster import BetaWarning, PreviewWarning

        warnings.filterwarnings("ignore", category=BetaWarning)
        warnings.filterwarnings("ignore", category=PreviewWarning)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(COMMANDS[args.command].run(load_settings(), args))
    except ConfigError as exc:
        print(f"lms-activity: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
