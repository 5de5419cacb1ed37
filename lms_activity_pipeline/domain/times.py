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
    moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
    if hasattr(moment, "to_pydatetime"):  # pandas.Timestamp, without importing pandas here
        moment = moment.to_pydatetime()
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
