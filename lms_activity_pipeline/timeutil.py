"""UTC normalisation shared by the LMS queries, the warehouse and the CLI."""

from __future__ import annotations

import datetime as dt


def to_utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC; a naive value is taken to be UTC already (how SQLite stores times)."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
