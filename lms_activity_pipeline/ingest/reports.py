"""What an ingest step did, for logs and metadata: counts, rejected rows, a preview."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from lms_activity_pipeline.domain import cleaning
from lms_activity_pipeline.lms.queries import ExtractWindow
from lms_activity_pipeline.warehouse.load import UpsertResult


def combined_rejects(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Rejected rows of several pieces as one frame, each (source, id, reason) once."""
    return pd.concat([cleaning.empty_rejects(), *parts], ignore_index=True).drop_duplicates(["source", "id", "reason"])


@dataclass(frozen=True)
class StageReport:
    """One staging step: LMS rows read, staged (upsert counts), rejected, dated in the future."""

    table: str
    window: ExtractWindow
    extracted: int
    upserted: UpsertResult
    rejected: pd.DataFrame
    future_rows: int
    lms_now: pd.Timestamp
    preview: pd.DataFrame


@dataclass(frozen=True)
class EventsReport:
    """The classification step: events stored per type, notifications enqueued, rows rejected."""

    window: ExtractWindow
    upserted: UpsertResult
    enqueued: int
    counts: dict[str, int]
    rejected: pd.DataFrame
    #: Earlier attempts left out of attempt numbering because a value cannot be read.
    left_out: pd.DataFrame
    preview: pd.DataFrame

    @property
    def events(self) -> int:
        return sum(self.counts.values())

    @property
    def rows_rejected(self) -> int:
        """Rejected rows, not counting rows kept with a note."""
        return int((~cleaning.kept(self.rejected)).sum())


@dataclass(frozen=True)
class FeaturesReport:
    """A feature table's window recomputed (and, for ai_ready_events, later events brought up to date)."""

    window: ExtractWindow
    upserted: UpsertResult
    rows: pd.DataFrame
    students: int = 0
    lookback_events: int = 0
    later_recomputed: int = 0
    later_changed: int = 0
    stale_students: int = 0
    extra: dict[str, int] = field(default_factory=dict)
