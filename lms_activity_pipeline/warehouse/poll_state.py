"""The LMS poll's state (``lms_monitor_state``): one cursor that the sensor and ``lms-activity monitor`` share.

Saved with compare-and-set: a poll writes its new cursor only if the stored one is still the one it
read. Two pollers at once (the daemon's sensor and a CLI, two CLIs) never both request the same change:
the second one's write fails, and it requests nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lms_activity_pipeline import db
from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.warehouse.schema import lms_monitor_state as table

#: The row of the LMS poll (the sensor's name: the CLI evaluates that sensor).
POLLER = "lms_activity_sensor"
#: The row ``lms-activity monitor`` kept its own cursor in before the two shared one (read once, on upgrade).
LEGACY_CLI_POLLER = "cli"


@dataclass(frozen=True)
class PollState:
    """The stored state: ``cursor`` is ``None`` before the first poll."""

    cursor: str | None = None
    last_poll_at: dt.datetime | None = None
    last_run_key: str | None = None
    last_outcome: str | None = None


def read_state(engine: Engine, name: str = POLLER) -> PollState:
    with engine.connect() as conn:
        row = conn.execute(sa.select(table).where(table.c.name == name)).mappings().first()
    if row is None:
        return PollState()
    return PollState(row["cursor"], to_utc(row["last_poll_at"]), row["last_run_id"], row["last_run_status"])


def save_state(
    engine: Engine,
    read: PollState,
    cursor: str,
    outcome: str,
    run_key: str | None,
    now: dt.datetime,
    name: str = POLLER,
) -> bool:
    """Store ``cursor`` if the stored state is still ``read``; False when another poll saved first."""
    values = {"cursor": cursor, "last_poll_at": to_utc(now), "last_run_status": outcome[:500]}
    if run_key is not None:
        values["last_run_id"] = run_key
    with db.write_transaction(engine) as conn:
        if read.cursor is None and read.last_poll_at is None:
            first = db.insert(conn, table).values(name=name, **values).on_conflict_do_nothing(index_elements=["name"])
            return conn.execute(first).rowcount == 1
        same = table.c.cursor.is_(None) if read.cursor is None else table.c.cursor == read.cursor
        return conn.execute(table.update().where(table.c.name == name, same).values(**values)).rowcount == 1
