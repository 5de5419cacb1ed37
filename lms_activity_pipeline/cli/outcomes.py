"""What ``lms-activity monitor`` did, as the output prints it: the runs a poll executed and their metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dagster import RunRequest

from lms_activity_pipeline import names


def poll_line(warning: bool, line: str) -> str:
    """One of the sensor's lines as the CLI prints it."""
    return f"  warning: {line}" if warning else f"Poll: {line}"


@dataclass(frozen=True)
class RunOutcome:
    """One run the poll executed: what was requested, its id, whether it succeeded, its metadata by step."""

    request: RunRequest
    run_id: str
    success: bool
    #: Per asset (its materialisation) or op (its output): the metadata values.
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def is_ingest(self) -> bool:
        return self.request.job_name == names.INGEST_JOB


@dataclass(frozen=True)
class PollOutcome:
    """What one poll did: the sensor's log lines (warning or not), why it requested nothing, the runs it executed."""

    lines: list[tuple[bool, str]]
    skip_reason: str | None
    runs: list[RunOutcome]

    @property
    def all_succeeded(self) -> bool:
        return all(r.success for r in self.runs)
