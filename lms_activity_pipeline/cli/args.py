"""Argument types shared by the ``lms-activity`` commands: a bad value is one line naming the option."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable


def positive(name: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {value!r}") from None
        if number < 1:
            raise argparse.ArgumentTypeError(f"{name} must be >= 1, got {number}")
        return number

    return parse


def timestamp(name: str) -> Callable[[str], dt.datetime]:
    def parse(value: str) -> dt.datetime:
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an ISO-8601 time, got {value!r}") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)

    return parse
