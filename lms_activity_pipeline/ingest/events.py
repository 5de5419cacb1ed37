"""Classification: staged attempts of a window -> ``lms_activity_events``, and the mentor pairs it enqueues."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from lms_activity_pipeline.domain import classification as cls
from lms_activity_pipeline.domain import cleaning
from lms_activity_pipeline.domain.mentor_pairs import notification_pairs
from lms_activity_pipeline.ingest.reports import EventsReport, combined_rejects
from lms_activity_pipeline.lms.queries import ExtractWindow
from lms_activity_pipeline.lms.reader import LMSReader
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.load import UpsertResult
from lms_activity_pipeline.warehouse.store import Warehouse

PREVIEW_COLUMNS = ["event_key", "event_type", "student_username", "activity_title", "mentor_username", "timestamp"]


class AttemptNumbers:
    """Attempt numbers from the LMS's earlier exam attempts, and the rows left out because a value
    (``started_at = '-infinity'``, a BC date) cannot be read: logged and counted, never dropped unseen."""

    def __init__(self, reader: LMSReader) -> None:
        self.reader = reader
        self.left_out: list[pd.DataFrame] = []

    def __call__(self, student_ids: set[int] | None, until: dt.datetime | None) -> pd.Series:
        history, unreadable = self.reader.exam_attempt_history(student_ids, until)
        self.left_out.append(unreadable)
        return cls.attempt_numbers(history)

    def unreadable(self) -> pd.DataFrame:
        rows = combined_rejects(self.left_out)
        return rows.assign(reason=rows["reason"] + " (left out of attempt numbers)")


@dataclass(frozen=True)
class ClassifiedPiece:
    """One piece of the window: its events, the rows rejected, and the staged versions it processed."""

    events: pd.DataFrame
    rejected: pd.DataFrame
    #: Per staged table, ``id, updated_at, reason`` of every row read (reason NULL: accepted).
    versions: dict[sa.Table, pd.DataFrame]


def classify_piece(
    numbering: AttemptNumbers, store: Warehouse, dims: cls.Dimensions, piece: ExtractWindow, numbers: pd.Series | None
) -> ClassifiedPiece:
    """Events of one piece of the window from the staged attempts, the rows rejected, the versions read."""
    staged_exams = store.attempts_in_window(wh.raw_exam_attempts, piece)
    staged_contents = store.attempts_in_window(wh.raw_content_attempts, piece)
    exams, bad_exams = cleaning.clean_exam_attempts(staged_exams)
    contents, bad_contents = cleaning.clean_content_attempts(staged_contents)
    if numbers is None and not exams.empty:
        numbers = numbering(set(exams["user_id"].tolist()), piece.end)
    exam_events, bad_exam_refs = cls.classify_exam_attempts(exams, dims, numbers)
    content_events, bad_content_refs = cls.classify_content_attempts(contents, dims)
    events = pd.concat([exam_events, content_events], ignore_index=True)
    rejected = pd.concat([bad_exams, bad_contents, bad_exam_refs, bad_content_refs], ignore_index=True)
    versions = {
        wh.raw_exam_attempts: cleaning.processed_versions("Attempts", staged_exams, rejected),
        wh.raw_content_attempts: cleaning.processed_versions("ContentAttempts", staged_contents, rejected),
    }
    return ClassifiedPiece(cls.in_window(events, piece.start, piece.end), rejected, versions)


def classify_window(
    reader: LMSReader,
    store: Warehouse,
    window: ExtractWindow,
    *,
    chunk_days: int,
    event_types: Collection[str],
    notify_max_age: dt.timedelta,
    now: dt.datetime,
    progress: Callable[[str], None] | None = None,
) -> EventsReport:
    """Classify the staged attempts of ``window``, upsert the events of ``event_types`` by ``event_key``,
    enqueue a pending notification per (young event, mentor), and note which staged versions were processed."""
    pieces = window.chunks(chunk_days)
    dims, bad_dims = reader.dimensions()
    numbering = AttemptNumbers(reader)
    # Attempt numbers need every earlier attempt: read once for a multi-piece range.
    numbers = numbering(None, window.end) if len(pieces) > 1 else None
    result, enqueued, counts = UpsertResult(0, 0, 0), 0, cls.counts_by_type(cls.empty_events())
    rejects, shown = [bad_dims], cls.empty_events()
    outbox = store.outbox()
    for number, piece in enumerate(pieces, start=1):
        classified = classify_piece(numbering, store, dims, piece, numbers)
        events = cls.of_types(classified.events, event_types)
        result += store.upsert_events(events)
        enqueued += outbox.enqueue(notification_pairs(events, dims.assignments, now=now, max_age=notify_max_age))
        # Stored and enqueued: only now are the staged versions in lms_activity_events (or refused, and why).
        for table, versions in classified.versions.items():
            store.mark_classified(table, versions)
        counts = {k: counts[k] + v for k, v in cls.counts_by_type(events).items()}
        rejects.append(classified.rejected)
        shown = events if shown.empty else shown
        if progress is not None and len(pieces) > 1:
            progress(
                f"lms_activity_events: {piece.describe()} ({number}/{len(pieces)}), {sum(counts.values()):,} events so far"
            )
    return EventsReport(
        window=window,
        upserted=result,
        enqueued=enqueued,
        counts=counts,
        rejected=combined_rejects(rejects),
        left_out=numbering.unreadable(),
        preview=shown.sort_values("timestamp")[PREVIEW_COLUMNS] if not shown.empty else pd.DataFrame(),
    )
