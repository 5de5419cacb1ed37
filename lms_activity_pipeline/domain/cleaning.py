"""Typing and validation of raw LMS rows, vectorised.

Each ``clean_*`` function takes a frame as the database handed it (strings
from a PostgreSQL ``COPY``, whatever SQLite stored) and returns
``(clean, rejected)``: ``clean`` has proper dtypes (nullable ``Int64``,
``float64``, UTC ``datetime64``), ``rejected`` has one row per bad input row
with its ``id`` and a readable ``reason``. A bad row never sinks its batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

EXAM_STATUSES = ("in_progress", "submitted", "graded", "abandoned")
CONTENT_STATUSES = ("started", "in_progress", "completed")
CONTENT_TYPES = ("video", "audio", "article", "document", "interactive")
REJECT_COLUMNS = ["source", "id", "reason"]


@dataclass(frozen=True)
class Column:
    """How to type one column: ``kind`` is ``int``, ``float``, ``time``, ``text`` or ``bool``."""

    name: str
    kind: str
    required: bool = False


EXAM_ATTEMPT_COLUMNS = (
    Column("id", "int", True),
    Column("user_id", "int", True),
    Column("exam_id", "int", True),
    Column("status", "text", True),
    Column("started_at", "time", True),
    Column("submitted_at", "time"),
    Column("graded_at", "time"),
    Column("score", "float"),
    Column("updated_at", "time", True),
)
CONTENT_ATTEMPT_COLUMNS = (
    Column("id", "int", True),
    Column("user_id", "int", True),
    Column("content_id", "int", True),
    Column("status", "text", True),
    Column("progress_percent", "float", True),
    Column("time_spent_seconds", "int", True),
    Column("started_at", "time", True),
    Column("completed_at", "time"),
    Column("updated_at", "time", True),
)
USER_COLUMNS = (
    Column("id", "int", True),
    Column("username", "text", True),
    Column("email", "text"),
    Column("full_name", "text"),
    Column("role", "text", True),
    Column("is_active", "bool"),
)
COURSE_COLUMNS = (Column("id", "int", True), Column("title", "text"))
EXAM_COLUMNS = (
    Column("id", "int", True),
    Column("course_id", "int"),
    Column("title", "text"),
    Column("max_score", "float"),
    Column("pass_score", "float"),
)
CONTENT_COLUMNS = (
    Column("id", "int", True),
    Column("course_id", "int"),
    Column("title", "text"),
    Column("content_type", "text"),
    Column("duration_seconds", "int"),
)
ASSIGNMENT_COLUMNS = (
    Column("id", "int", True),
    Column("student_id", "int", True),
    Column("mentor_id", "int", True),
    Column("assigned_at", "time", True),
    Column("ended_at", "time"),
)
#: What a poll reads of a changed attempt (``changed_rows``).
CHANGE_COLUMNS = (Column("id", "int", True), Column("started_at", "time", True), Column("updated_at", "time", True))
#: What attempt numbering reads of earlier exam attempts (``exam_attempt_history``).
HISTORY_COLUMNS = (
    Column("id", "int", True),
    Column("user_id", "int", True),
    Column("exam_id", "int", True),
    Column("started_at", "time", True),
)
#: How a reason ends when the row was kept (a value ignored or shown with U+FFFD): a note, not a reject.
ROW_KEPT = "(row kept)"
#: What replaced the bytes of a text value that was not UTF-8 (see ``db.read_frame``).
REPLACEMENT_CHARACTER = "\ufffd"


_NO_REJECTS = pd.DataFrame({c: pd.Series(dtype=object) for c in REJECT_COLUMNS})


def empty_rejects() -> pd.DataFrame:
    return _NO_REJECTS.copy()  # a copy of a template: ten times cheaper than building one (sensor ticks)


def parse_times(values: pd.Series) -> pd.Series:
    """ISO-8601 text or datetimes -> UTC timestamps; text without an offset is UTC.

    What pandas cannot hold becomes NaT, to be rejected by the caller with the
    column named: PostgreSQL's ``infinity``/``-infinity``, BC dates
    (``0044-03-15 00:00:00+00 BC``), years outside 1677..2262.
    """
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty", "datetime", "date", "datetime64"):
        values = values.astype("string")  # numbers (epoch seconds in SQLite) are no ISO-8601: they become NaT
    return pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")


INT64_MAX = 2**63 - 1


def parse_int(values: pd.Series) -> pd.Series:
    """Whole numbers that fit a BIGINT -> ``Int64``; anything else (text, fractions, 1e20) -> NA."""
    num = pd.to_numeric(values, errors="coerce")
    if pd.api.types.is_unsigned_integer_dtype(num):
        num = num.astype("UInt64")
        return num.where(num <= INT64_MAX).astype("Int64")
    if pd.api.types.is_integer_dtype(num):
        return num.astype("Int64")
    whole = num.notna() & (num % 1 == 0) & (num.abs() < 2.0**63)
    typed = num.where(whole).astype("Int64")
    # Mixed columns parse through float64, exact only below 2**53: re-read the few larger ones exactly.
    large = whole & (num.abs() >= 2.0**53)
    if large.any():
        typed[large] = pd.array([_exact_int(v) for v in values[large]], dtype="Int64")
    return typed


def _exact_int(value: object) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        return int(float(str(value)))


def _parse_bool(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        return values.astype("boolean")
    text = values.astype("string").str.strip().str.lower()
    mapping = {"t": True, "true": True, "1": True, "1.0": True, "f": False, "false": False, "0": False, "0.0": False}
    return text.map(mapping).astype("boolean")


def _parse(kind: str, raw: pd.Series) -> pd.Series:
    """One column typed by ``kind``; what does not parse becomes missing."""
    if kind == "int":
        return parse_int(raw)
    if kind == "float":
        return pd.to_numeric(raw, errors="coerce").astype("float64")
    if kind == "time":
        return parse_times(raw)
    if kind == "bool":
        return _parse_bool(raw)
    value = raw.astype("string").str.strip()
    return value.where(value != "")


def _typed(frame: pd.DataFrame, spec: tuple[Column, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Typed copy of ``frame`` plus, per column, a mask of values that did not parse."""
    typed: dict[str, pd.Series] = {}
    bad: dict[str, pd.Series] = {}
    for col in spec:
        raw = frame[col.name] if col.name in frame.columns else pd.Series(pd.NA, index=frame.index, dtype=object)
        present = raw.notna() & (raw.astype("string").str.strip() != "").fillna(False)
        value = _parse(col.kind, raw)
        typed[col.name] = value
        bad[col.name] = present & value.isna()
        if col.required:
            bad[col.name] |= ~present
    return pd.DataFrame(typed, index=frame.index), pd.DataFrame(bad, index=frame.index)


Problem = tuple[pd.Series, Callable[[pd.Series], "pd.Series | str"]]


def _split(
    source: str, typed: pd.DataFrame, problems: list[Problem], newest: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Separate rows hit by any problem mask; the first problem names the reason.

    A problem is ``(mask, describe)``; ``describe(hit)`` builds the reason text
    only for the rows it hits, so clean batches pay for no string work. Of
    several otherwise good rows with one ``id`` (SQLite keeps ``'1'`` and ``1``
    apart) the one with the latest ``newest`` column (else the first) is kept.
    """
    reason = pd.Series(pd.NA, index=typed.index, dtype="string")
    for mask, describe in problems:
        hit = mask.fillna(False).astype(bool) & reason.isna()
        if hit.any():
            text = describe(hit)
            reason[hit] = text[hit] if isinstance(text, pd.Series) else text
    good = typed.loc[reason.isna()]
    if newest is not None:
        good = good.sort_values(newest, ascending=False, kind="stable")
    repeated = good.index[good["id"].duplicated(keep="first").to_numpy()]
    if len(repeated):
        reason[repeated] = "id: duplicate of another row with this id" + (f" and a later {newest}" if newest else "")
    bad = reason.notna()
    rejected = pd.DataFrame({"source": source, "id": typed.loc[bad, "id"].astype(object), "reason": reason[bad]})
    return typed.loc[~bad].reset_index(drop=True), rejected.reset_index(drop=True)


def _type_problems(spec: tuple[Column, ...], raw: pd.DataFrame, bad: pd.DataFrame) -> list[Problem]:
    def describe(name: str) -> Callable[[pd.Series], pd.Series | str]:
        if name not in raw.columns:
            return lambda hit: f"{name}: column missing"
        return lambda hit: (
            f"{name}: invalid or missing value " + raw.loc[hit, name].astype("string").fillna("NULL").str.slice(0, 40)
        )

    return [(bad[col.name], describe(col.name)) for col in spec]


def _undecodable(spec: tuple[Column, ...], typed: pd.DataFrame) -> dict[str, pd.Series]:
    """Per text column, the values that held bytes which are not UTF-8 (now U+FFFD)."""
    return {
        col.name: typed[col.name].str.contains(REPLACEMENT_CHARACTER, regex=False).fillna(False).astype(bool)
        for col in spec
        if col.kind == "text"
    }


def _undecodable_problems(spec: tuple[Column, ...], typed: pd.DataFrame) -> list[Problem]:
    """Text a row cannot be used with (a status, a role): rejected, the column named."""

    def reason(name: str) -> Callable[[pd.Series], pd.Series]:
        return lambda hit: f"{name}: text that is not UTF-8: " + typed.loc[hit, name].str.slice(0, 40)

    return [(mask, reason(name)) for name, mask in _undecodable(spec, typed).items()]


def clean_exam_attempts(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Type ``Attempts`` rows; reject unparseable values, unknown statuses, negative scores."""
    typed, bad = _typed(raw, EXAM_ATTEMPT_COLUMNS)
    problems = _type_problems(EXAM_ATTEMPT_COLUMNS, raw, bad) + _undecodable_problems(EXAM_ATTEMPT_COLUMNS, typed)
    problems += [
        (
            ~typed["status"].isin(EXAM_STATUSES),
            lambda hit: "status: unknown value " + typed.loc[hit, "status"].fillna("NULL"),
        ),
        (typed["score"] < 0, lambda hit: "score: negative value " + typed.loc[hit, "score"].astype("string")),
        (typed["submitted_at"] < typed["started_at"], lambda hit: "submitted_at is before started_at"),
    ]
    return _split("Attempts", typed, problems, newest="updated_at")


def clean_content_attempts(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Type ``ContentAttempts`` rows; reject unparseable values, unknown statuses, bad percentages."""
    typed, bad = _typed(raw, CONTENT_ATTEMPT_COLUMNS)
    problems = _type_problems(CONTENT_ATTEMPT_COLUMNS, raw, bad) + _undecodable_problems(CONTENT_ATTEMPT_COLUMNS, typed)
    pct = typed["progress_percent"]
    problems += [
        (
            ~typed["status"].isin(CONTENT_STATUSES),
            lambda hit: "status: unknown value " + typed.loc[hit, "status"].fillna("NULL"),
        ),
        ((pct < 0) | (pct > 100), lambda hit: "progress_percent: outside 0..100: " + pct[hit].astype("string")),
        (typed["time_spent_seconds"] < 0, lambda hit: "time_spent_seconds: negative value"),
    ]
    return _split("ContentAttempts", typed, problems, newest="updated_at")


def clean_dimension(source: str, raw: pd.DataFrame, spec: tuple[Column, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Type a dimension table (users, exams, ...); rows with an unusable required value are rejected.

    A present but unreadable optional value (``Exams.pass_score = 'n/a'``) keeps
    its row with that value empty, and text that was not UTF-8 keeps its row
    with U+FFFD in place of the bad bytes; both are reported among the rejects
    ("row kept") so they never silently change what is classified or shown.
    """
    typed, bad = _typed(raw, spec)
    required = tuple(c for c in spec if c.required)
    clean, rejected = _split(source, typed, _type_problems(required, raw, bad))
    notes = [rejected]
    keep = ~bad[[c.name for c in required]].any(axis=1)
    for col in (c for c in spec if not c.required and c.name in raw.columns):
        hit = bad[col.name] & keep
        if hit.any():
            values = raw.loc[hit, col.name].astype("string").str.slice(0, 40)
            notes.append(_notes(source, typed, hit, f"{col.name}: invalid value " + values + f" ignored {ROW_KEPT}"))
    for name, mask in _undecodable(spec, typed).items():
        hit = mask & keep
        if hit.any():
            values = typed.loc[hit, name].str.slice(0, 40)
            notes.append(
                _notes(source, typed, hit, f"{name}: text that is not UTF-8, kept as " + values + f" {ROW_KEPT}")
            )
    return clean, pd.concat(notes, ignore_index=True) if len(notes) > 1 else rejected


def _notes(source: str, typed: pd.DataFrame, hit: pd.Series, reason: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"source": source, "id": typed.loc[hit, "id"].astype(object), "reason": reason})


def clean_changes(source: str, raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Type the ``id, started_at, updated_at`` a poll reads; rows whose times cannot be read are rejected."""
    return _clean_required(source, raw, CHANGE_COLUMNS, newest="updated_at")


def clean_attempt_history(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Type the earlier exam attempts that attempt numbers count; unreadable rows are rejected."""
    return _clean_required("Attempts", raw, HISTORY_COLUMNS)


def _clean_required(
    source: str, raw: pd.DataFrame, spec: tuple[Column, ...], newest: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    quick = pd.DataFrame({c.name: _parse(c.kind, raw[c.name]) for c in spec}, index=raw.index)
    if quick.notna().all(axis=None) and not quick["id"].duplicated().any():
        return quick.reset_index(drop=True), empty_rejects()  # the usual case: no reasons to work out (sensor ticks)
    typed, bad = _typed(raw, spec)
    return _split(source, typed, _type_problems(spec, raw, bad), newest=newest)


def processed_versions(source: str, staged: pd.DataFrame, rejected: pd.DataFrame) -> pd.DataFrame:
    """``id, updated_at, reason`` of the staged rows a classification step read: which version of each
    it processed and, for those of ``source`` it rejected, the (first) reason; NULL means accepted."""
    versions = pd.DataFrame({"id": parse_int(staged["id"]), "updated_at": parse_times(staged["updated_at"])})
    mine = rejected.loc[rejected["source"] == source]
    reasons = pd.Series(mine["reason"].to_numpy(), index=parse_int(mine["id"]).to_numpy(), dtype=object)
    reasons = reasons[~reasons.index.duplicated(keep="first")]
    return versions.assign(reason=versions["id"].map(reasons).astype(object))


def kept(rejected: pd.DataFrame) -> pd.Series:
    """Which of ``rejected`` are notes about rows that were kept (see :data:`ROW_KEPT`)."""
    return rejected["reason"].astype("string").str.endswith(ROW_KEPT).fillna(False).astype(bool)
