"""Staging: copy the LMS attempts of a window into ``raw_*``, typed and validated, piece by piece."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from lms_activity_pipeline.domain import cleaning
from lms_activity_pipeline.ingest.reports import StageReport, combined_rejects
from lms_activity_pipeline.lms.queries import ExtractWindow
from lms_activity_pipeline.lms.reader import LMSReader
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.load import UpsertResult
from lms_activity_pipeline.warehouse.store import Warehouse

Cleaner = Callable[[pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]


@dataclass(frozen=True)
class StagedSource:
    """An LMS attempts table and the staged copy it goes to."""

    table: sa.Table
    extract: Callable[[LMSReader, ExtractWindow], pd.DataFrame]
    clean: Cleaner


EXAM_ATTEMPTS = StagedSource(wh.raw_exam_attempts, LMSReader.exam_attempts, cleaning.clean_exam_attempts)
CONTENT_ATTEMPTS = StagedSource(wh.raw_content_attempts, LMSReader.content_attempts, cleaning.clean_content_attempts)


def stage_attempts(
    reader: LMSReader,
    store: Warehouse,
    source: StagedSource,
    window: ExtractWindow,
    chunk_days: int,
    progress: Callable[[str], None] | None = None,
) -> StageReport:
    """Upsert ``source``'s rows of ``window`` into its staged table, ``chunk_days`` at a time (bounded memory).

    Rows whose ``updated_at`` is after the LMS database's now (an app server whose clock runs fast) are
    stored as they are and counted. ``progress`` hears after each piece of a multi-piece window.
    """
    result, extracted, rejects, first, future = UpsertResult(0, 0, 0), 0, [], None, 0
    lms_now = pd.Timestamp(reader.database_now())
    pieces = window.chunks(chunk_days)
    for number, piece in enumerate(pieces, start=1):
        raw = source.extract(reader, piece)
        clean, rejected = source.clean(raw)
        result += store.upsert(source.table, clean, key="id", touch="_extracted_at")
        extracted += len(raw)
        future += int((clean["updated_at"] > lms_now).sum())
        rejects.append(rejected)
        first = clean if first is None or first.empty else first
        if progress is not None and len(pieces) > 1:
            progress(f"{source.table.name}: {piece.describe()} ({number}/{len(pieces)}), {extracted:,} LMS rows so far")
    return StageReport(
        table=source.table.name,
        window=window,
        extracted=extracted,
        upserted=result,
        rejected=combined_rejects(rejects),
        future_rows=future,
        lms_now=lms_now,
        preview=first if first is not None else pd.DataFrame(),
    )
