"""UTC normalisation: one function for the LMS queries, the warehouse, the outbox and the CLI."""

from __future__ import annotations

import datetime as dt
from typing import overload


@overload
def to_utc(value: dt.datetime | str) -> dt.datetime: ...


@overload
def to_utc(value: None) -> None: ...


def to_utc(value: dt.datetime | str | None) -> dt.datetime | None:
    """``value`` as an aware UTC ``datetime``: a ``pandas.Timestamp`` or ISO-8601 text (what SQLite returns
    for an aggregate) included; a naive value is taken to be UTC already (how SQLite stores times);
    ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if hasattr(value, "to_pydatetime"):  # pandas.Timestamp, without importing pandas here
        value = value.to_pydatetime()
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
