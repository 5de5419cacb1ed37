"""What ``lms-activity monitor`` prints: one line per fact, flushed as it happens."""

from __future__ import annotations

from lms_activity_pipeline import names
from lms_activity_pipeline.cli.outcomes import PollOutcome, RunOutcome, poll_line


def print_poll(outcome: PollOutcome, *, lines: bool = True) -> None:
    """The sensor's lines (unless printed already), the runs it executed (events, rejects, notifications), or
    why there was none."""
    for warning, line in outcome.lines if lines else []:
        print(poll_line(warning, line))
    if not any(run.is_ingest for run in outcome.runs):
        print(f"Poll: {outcome.skip_reason or 'nothing changed'}")
    for run in outcome.runs:
        if run.is_ingest:
            print_ingest(run)
        else:
            print_notify(run)


def print_ingest(run: RunOutcome) -> None:
    state = "stored" if run.success else "FAILED (the next poll requests the window again)"
    days = run.request.partition_key or "..".join(
        run.request.tags.get(tag, "?") for tag in (names.RANGE_START_TAG, names.RANGE_END_TAG)
    )
    changed = run.request.tags.get(names.CHANGED_ROWS_TAG, "0")
    what = "history" if changed == "0" else f"{changed} changed rows"
    print(f"  ingest run {run.run_id} ({days}, {what}): {state}")
    events = run.metadata.get(names.LMS_ACTIVITY_EVENTS)
    if events:
        print(
            f"  lms_activity_events: {events.get('rows_inserted', 0)} new, {events.get('rows_updated', 0)} changed, "
            f"{events.get('rows_unchanged', 0)} unchanged, {events.get('notifications_enqueued', 0)} notifications enqueued"
        )
    rejected = {
        asset: int(meta.get(names.ROWS_REJECTED, 0))
        for asset in names.INGEST_ASSETS
        if (meta := run.metadata.get(asset))
    }
    if rejected:
        steps = ", ".join(f"{asset} {n}" for asset, n in rejected.items())
        print(f"  LMS rows rejected: {sum(rejected.values())} ({steps}; reasons in each step's rejected_preview)")


def print_notify(run: RunOutcome) -> None:
    if not run.success:
        print(f"  notify run {run.run_id}: FAILED (open pairs stay in lms_event_log; see the run's logs)")
        return
    meta = run.metadata.get(names.NOTIFY_OP, {})
    counts = ", ".join(f"{meta.get(k, 0)} {k}" for k in ("sent", "skipped", "failed", "dry_run"))
    line = (
        f"  notify run {run.run_id}: {counts}; {meta.get('messages', 0)} messages to {meta.get('mentors', 0)} mentors"
    )
    print(f"{line}; {meta.get('open_pairs') or str(meta.get('open_pairs_left', 0)) + ' pairs still open'}")
    if meta.get("stopped_early"):
        print(f"  stopped early: {meta['stopped_early']} (the rest waits for the next run)")
