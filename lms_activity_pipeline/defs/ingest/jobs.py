"""``lms_ingest_job`` (the partitioned assets of ``lms_activity``) and ``lms_quality_checks_job`` (an audit)."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from lms_activity_pipeline import names

#: No tags for queueing or retries: its assets are in the ``lms_ingest`` pool and the instance retries every
#: failed run (``run_retries: max_retries: 1``), so runs of Dagster's implicit asset job (UI materialisations,
#: backfills) are serialised and retried the same way.
lms_ingest_job = define_asset_job(
    names.INGEST_JOB,
    selection=AssetSelection.groups(names.ACTIVITY_GROUP),
    description=(
        "Extract LMS attempts for the partition's days, classify them, upsert the event tables, run the checks "
        "and recompute the feature tables."
    ),
)

lms_quality_checks_job = define_asset_job(
    names.QUALITY_JOB,
    selection=AssetSelection.all_asset_checks(),
    description="Run every data-quality check over the whole warehouse tables, without materialising anything.",
)
