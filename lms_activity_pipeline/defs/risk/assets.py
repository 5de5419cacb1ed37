"""Asset ``student_risk`` (daily partitions, group ``lms_risk``), its check, ``student_risk_job`` and its schedule.

Not part of ``lms_ingest_job``: a day's risk reads 60 days of events for every student, so it is computed
hourly for today by ``student_risk_schedule`` (and by ``lms-activity risk --refresh``, the UI, backfills),
not on every poll.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetSpec,
    DefaultScheduleStatus,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    ScheduleEvaluationContext,
    asset,
    asset_check,
    define_asset_job,
    schedule,
)

from lms_activity_pipeline import names
from lms_activity_pipeline.defs import metadata as md
from lms_activity_pipeline.defs.partitions import DAILY, SINGLE_RUN
from lms_activity_pipeline.defs.resources import RiskSettings, WarehouseResource
from lms_activity_pipeline.domain.risk import LEVELS, RiskThresholds
from lms_activity_pipeline.domain.risk_model import RiskModel
from lms_activity_pipeline.errors import ConfigError
from lms_activity_pipeline.ingest.risk import compute_student_risk, local_days, train_risk_model
from lms_activity_pipeline.settings import RISK_MODELS
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse.risk import flagged_without_reasons
from lms_activity_pipeline.warehouse.store import Warehouse


def thresholds_of(risk: RiskSettings) -> RiskThresholds:
    if risk.model not in RISK_MODELS:
        raise ConfigError(f"LMS_RISK_MODEL={risk.model!r} must be one of {', '.join(RISK_MODELS)}")
    return RiskThresholds(inactive_days=risk.inactive_days)


def learned_model(
    context: AssetExecutionContext, store: Warehouse, thresholds: RiskThresholds
) -> tuple[RiskModel, bool]:
    """The latest stored learned model, or one trained now on the history before the partition (and stored)."""
    model = store.risk_model()
    if model is not None:
        return model, False
    try:
        model = train_risk_model(store, context.partition_time_window.start, DAILY.timezone, thresholds)
    except ValueError as exc:
        raise ConfigError(f"LMS_RISK_MODEL=learned: {exc}") from None
    context.log.info(f"student_risk: trained and stored {model.name}")
    return model, True


def model_metadata(model: RiskModel, trained: bool) -> dict[str, MetadataValue]:
    """The learned model's version, features and validation metrics (the rules' on the same split too)."""
    out: dict[str, MetadataValue] = {
        "model_version": MetadataValue.text(model.version),
        "model_trained_now": MetadataValue.bool(trained),
        "model_features": MetadataValue.text(", ".join(model.features)),
        "model_trained_at": MetadataValue.text(model.trained_at.isoformat()),
    }
    for key in ("precision", "recall", "pr_auc", "rules_precision", "rules_recall"):
        value = model.metrics.get(key)
        if value is not None:
            out[f"validation_{key}"] = MetadataValue.float(float(value))
    for key in ("train_days", "validation_days", "train_rows", "validation_rows", "validation_positives"):
        if key in model.metrics:
            out[f"model_{key}"] = MetadataValue.text(str(model.metrics[key]))
    return out


@asset(
    name=names.STUDENT_RISK,
    partitions_def=DAILY,
    backfill_policy=SINGLE_RUN,
    pool=names.INGEST_POOL,
    group_name=names.RISK_GROUP,
    kinds={"sql", "pandas"},
    metadata=md.table_metadata(wh.student_risk),
    deps=[names.LMS_ACTIVITY_EVENTS, names.AI_READY_EVENTS],
    description=(
        "One row per (student, course, day) for students active in the course in the 60 days before: risk "
        "level (high/medium/low), score and reasons (inactive, failed_in_row, unpassed_exam, stalled_content, "
        "declining_scores). Only events before the end of the day count: a day recomputed later is the same. "
        "LMS_RISK_MODEL=learned: scored by the latest model in risk_models (trained and stored if none)."
    ),
)
def student_risk(context: AssetExecutionContext, warehouse: WarehouseResource, risk: RiskSettings) -> MaterializeResult:
    window, store, thresholds = context.partition_time_window, warehouse.store(), thresholds_of(risk)
    model, trained = learned_model(context, store, thresholds) if risk.model == "learned" else (None, False)
    report = compute_student_risk(store, window.start, window.end, DAILY.timezone, thresholds, model)
    context.log.info(
        f"student_risk: {len(report.days)} day(s), "
        + ", ".join(f"{n} {lvl}" for lvl, n in report.levels.items())
        + f", {report.on_track} on track, in {report.seconds:.1f} s"
    )
    for key in context.partition_keys:
        context.add_asset_metadata({names.ROW_COUNT: MetadataValue.int(report.per_day.get(key, 0))}, partition_key=key)
    return MaterializeResult(
        metadata={
            **{f"rows_{level}": MetadataValue.int(report.levels[level]) for level in LEVELS},
            "on_track": MetadataValue.int(report.on_track),
            "model": MetadataValue.text(report.model),
            "seconds": MetadataValue.float(round(report.seconds, 3)),
            **md.upsert_metadata(report.upserted),
            **md.table_metadata(wh.student_risk),
            "preview": md.preview(report.preview),
            **(model_metadata(model, trained) if model is not None else {}),
        }
    )


@asset_check(
    asset=names.STUDENT_RISK,
    name=names.RISK_REASONS_CHECK,
    blocking=True,
    description="Every high or medium student_risk row of the partition has at least one reason (ERROR).",
)
def flagged_rows_have_reasons(context: AssetCheckExecutionContext, warehouse: WarehouseResource) -> AssetCheckResult:
    store = warehouse.store()
    if context.has_partition_key or context.has_partition_key_range:
        days = local_days(context.partition_time_window.start, context.partition_time_window.end, DAILY.timezone)
        first, end = days[0][0], days[-1][1].date()
        stmt, scope = (
            flagged_without_reasons(store.engine.dialect.name == "postgresql", first, end),
            f"{first} .. {days[-1][0]}",
        )
    else:
        stmt, scope = flagged_without_reasons(store.engine.dialect.name == "postgresql"), "the whole table"
    offending = store.read_typed(stmt)
    return AssetCheckResult(
        passed=offending.empty,
        severity=AssetCheckSeverity.ERROR,
        description=f"high/medium rows without a reason: {len(offending) or 'none'} in {scope}",
        metadata={"offending_rows": MetadataValue.int(len(offending)), "preview": md.preview(offending)},
    )


student_risk_job = define_asset_job(
    names.RISK_JOB,
    selection=[names.STUDENT_RISK],
    partitions_def=DAILY,
    description="Compute student_risk for the partition's days (and check that every flag has a reason).",
)


@schedule(
    name=names.RISK_SCHEDULE,
    cron_schedule="5 * * * *",
    job=student_risk_job,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every hour: recompute today's student_risk (inactivity grows while nothing happens).",
)
def student_risk_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    today = DAILY.get_partition_key_for_timestamp(context.scheduled_execution_time.timestamp())
    return RunRequest(run_key=f"{today}-{context.scheduled_execution_time:%H}", partition_key=today)


#: Tables of the at-risk digest, written outside the assets (the catalog shows them).
risk_tables = [
    AssetSpec(
        wh.risk_digest_log.name,
        deps=[names.STUDENT_RISK],
        group_name=names.RISK_GROUP,
        kinds={"sql"},
        metadata=md.table_metadata(wh.risk_digest_log),
        description="At-risk digest outbox: one row per (mentor, student, course, day) told, sent by notify runs.",
    ),
    AssetSpec(
        wh.risk_feedback.name,
        deps=[wh.risk_digest_log.name],
        group_name=names.RISK_GROUP,
        kinds={"sql"},
        metadata=md.table_metadata(wh.risk_feedback),
        description="Mentors' 👍/👎 reactions to at-risk digests, read back from Zulip by risk_feedback_job.",
    ),
    # learned at-risk model (issue 13, LMS_RISK_MODEL=learned)
    AssetSpec(
        wh.risk_models.name,
        deps=[wh.risk_feedback.name],
        group_name=names.RISK_GROUP,
        kinds={"sql"},
        metadata=md.table_metadata(wh.risk_models),
        description="The learned at-risk model's versions (numbers and validation metrics), trained by "
        "student_risk with LMS_RISK_MODEL=learned when none is stored.",
    ),
]
