"""A deterministic synthetic LMS in the reference schema (lms/schema.py).

``generate_demo_lms`` drops and recreates the reference tables from
:data:`~lms_activity_pipeline.lms.schema.REFERENCE` and fills them with a
school's worth of users, courses and activity over the last ``days`` days.
It only ever replaces a demo: a database holding any table that a demo did not
write (no :data:`DEMO_MARKER` table, or tables besides the demo's) is refused
with :class:`NotADemoDatabase` unless ``force`` is given, so pointing it at a
real LMS never drops it.
The same ``(students, days, seed, now)`` always gives the same rows: ids,
timestamps and scores.

Everything is generated column-wise with numpy (no Python loop per row) and
loaded with :func:`lms_activity_pipeline.db.bulk_insert` (``COPY`` on
PostgreSQL), so a million exam attempts take seconds, not minutes.

Timestamps are whole seconds, UTC, never after ``now``. The activity covers
every case the pipeline classifies: exams in progress, abandoned, submitted
and waiting for a grade, graded (passed, failed, exactly at the pass mark,
graded the next day), retakes after a failure, attempts that span midnight,
and content started, in progress (videos at exactly 89.9 % and 90 %) and
completed.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from lms_activity_pipeline import db
from lms_activity_pipeline.domain.times import to_utc
from lms_activity_pipeline.lms.schema import REFERENCE
from lms_activity_pipeline.settings import DEMO_MARKER_TABLE, Settings

DAY = 86_400
HOUR = 3_600
MINUTE = 60

#: Exam attempts and content attempts per student per day.
EXAM_ATTEMPT_RATE = 0.5
CONTENT_ATTEMPT_RATE = 1.0
#: Small demos still get enough rows to show every state.
MIN_EXAM_ATTEMPTS = 20
MIN_CONTENT_ATTEMPTS = 40

# fmt: off
FIRST_NAMES = np.array([
    "Ada", "Alan", "Amara", "Ana", "Ben", "Carla", "Chen", "Dara", "David", "Elena", "Emil", "Fatima",
    "Grace", "Hana", "Ivan", "Jamal", "Jana", "Kai", "Lena", "Liam", "Lucia", "Maya", "Mei", "Nadia",
    "Noah", "Omar", "Priya", "Rafael", "Rosa", "Sam", "Sofia", "Tariq", "Tomas", "Uma", "Vera", "Yusuf",
])
LAST_NAMES = np.array([
    "Abara", "Berg", "Costa", "Dubois", "Eze", "Fischer", "Garcia", "Haddad", "Ito", "Jensen", "Kowalski",
    "Larsen", "Moreau", "Nguyen", "Okafor", "Patel", "Quinn", "Rossi", "Silva", "Tanaka", "Novak", "Weber",
    "Yilmaz", "Zhang", "Horvat", "Lindqvist", "Mensah", "Petrov", "Santos", "Kim",
])
# fmt: on
COURSE_TITLES = np.array(
    [
        "Algebra I",
        "Biology Basics",
        "World History",
        "Introductory Chemistry",
        "Creative Writing",
        "Physics I",
        "Statistics",
        "Computer Science 101",
        "Spanish I",
        "Economics",
        "Geometry",
        "World Literature",
        "Art History",
        "Music Theory",
        "Psychology",
    ]
)
MAX_COURSES = len(COURSE_TITLES)
EXAM_TITLES = np.array(["Quiz 1", "Quiz 2", "Midterm exam", "Final exam"])
EXAM_MAX_SCORES = np.array([50, 50, 100, 100])
#: Pass marks at 60 %, 65 % or 70 % of the maximum.
PASS_FRACTIONS = np.array([0.60, 0.65, 0.70])
CONTENT_TYPES = np.array(["video", "audio", "article", "document", "interactive"])
VIDEO, AUDIO = 0, 1
CONTENT_LABELS = np.array(["Lecture video", "Podcast episode", "Reading", "Worksheet", "Interactive exercise"])
#: Active minutes (low, high) spent on a whole non-media content, by type code.
READING_MINUTES = np.array([[0, 0], [0, 0], [3, 20], [5, 30], [10, 45]])
#: The content types (codes into CONTENT_TYPES) of one course, shuffled per course.
CONTENT_MIX = np.array([VIDEO, VIDEO, VIDEO, AUDIO, 2, 2, 3, 4])
EXAM_STATUSES = ["in_progress", "submitted", "graded", "abandoned"]
CONTENT_STATUSES = ["started", "in_progress", "completed"]
#: Relative activity per UTC hour of the day: quiet nights, busy afternoons and evenings.
HOUR_WEIGHTS = np.array([3, 2, 1, 1, 1, 1, 2, 3, 5, 7, 8, 8, 7, 8, 9, 9, 9, 9, 10, 11, 11, 10, 8, 5], dtype=float)


@dataclass(frozen=True)
class DemoSummary:
    """Row counts of a generated demo LMS and the seconds it took."""

    students: int
    mentors: int
    courses: int
    exams: int
    contents: int
    mentor_assignments: int
    attempts: int
    content_attempts: int
    seconds: float


@dataclass(frozen=True)
class _Catalogue:
    """The generated dimensions that activity refers to (numpy arrays by row)."""

    n_students: int
    n_mentors: int
    n_staff: int
    student_ids: np.ndarray
    mentor_ids: np.ndarray
    student_inactive: np.ndarray
    course_ids: np.ndarray
    exam_course: np.ndarray
    exam_max: np.ndarray
    exam_pass: np.ndarray
    content_course: np.ndarray
    content_type: np.ndarray
    content_duration: np.ndarray


#: Written next to the reference tables by every schema this module creates: a database that holds it
#: (and nothing but the demo's tables) is a demo LMS, which a refresh may drop and recreate.
DEMO_MARKER = sa.Table(
    DEMO_MARKER_TABLE,
    sa.MetaData(),
    sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("students", sa.Integer),
    sa.Column("days", sa.Integer),
    sa.Column("seed", sa.BigInteger),
    sa.Column("history_start", sa.Date, comment="First day of the generated history (UTC): where partitions start"),
    comment="Marks this database as a demo LMS written by lms-activity-pipeline (lms-activity demo may replace it).",
)
#: The tables a demo refresh drops and recreates, in the database's default schema.
DEMO_TABLES = frozenset([*REFERENCE.tables, DEMO_MARKER.name])
#: PostgreSQL's own schemas, never the user's data.
SYSTEM_SCHEMAS = ("information_schema", "pg_")


class NotADemoDatabase(Exception):
    """The database holds tables a demo did not write: refreshing it would drop someone's data."""

    def __init__(self, tables: list[str]) -> None:
        self.tables = tables
        shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
        super().__init__(f"it holds {len(tables)} table(s) that are not the demo LMS's ({shown})")


# --------------------------------------------------------------------------- public API


def create_lms_schema(engine: Engine | Connection, *, force: bool = False) -> None:
    """Drop and recreate the (empty) reference LMS tables of a demo database (a refresh), from ``REFERENCE``.

    Raises :class:`NotADemoDatabase` when the database holds other tables, unless ``force``.
    """
    if isinstance(engine, Connection):
        _reset_schema(engine, force=force)
        return
    with engine.begin() as conn:
        _reset_schema(conn, force=force)


def foreign_tables(conn: Connection) -> list[str]:
    """The tables and views a demo refresh must not take for its own, ``schema.name`` outside the default schema.

    Every table of every user schema, unless the database carries :data:`DEMO_MARKER` in its default
    schema: then the ones besides the demo's. Empty for an empty database.
    """
    inspector = sa.inspect(conn)
    default = inspector.default_schema_name
    found: list[tuple[str, str]] = []
    for schema in inspector.get_schema_names():
        if schema.startswith(SYSTEM_SCHEMAS):
            continue
        names = [*inspector.get_table_names(schema=schema), *inspector.get_view_names(schema=schema)]
        found += [(schema, name) for name in names]
    is_demo = (default, DEMO_MARKER.name) in found
    return sorted(
        name if schema == default else f"{schema}.{name}"
        for schema, name in found
        if not (is_demo and schema == default and name in DEMO_TABLES)
    )


def generate_demo_lms(
    url_or_engine: str | URL | Engine,
    *,
    students: int = 50,
    days: int = 14,
    seed: int = 42,
    now: dt.datetime | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
) -> DemoSummary:
    """Create or refresh the demo LMS at ``url_or_engine``; the same arguments give the same rows.

    ``now`` (default: the current UTC time truncated to the minute) is the end
    of the generated history; naive values are taken as UTC. The schema refresh
    and the load run in one transaction, so readers never see half an LMS on
    PostgreSQL. A database that is neither empty nor a demo raises
    :class:`NotADemoDatabase` before anything is dropped; ``force`` drops and
    recreates the demo's tables anyway (any other table is left as it is). ``progress`` is told each step
    (rows built, each table loaded, indexes) as it finishes.
    """
    _check_sizes(students, days)
    say = progress or (lambda _line: None)
    began = time.perf_counter()
    anchor = default_now() if now is None else to_utc(now)
    owned = not isinstance(url_or_engine, Engine)
    engine = url_or_engine if isinstance(url_or_engine, Engine) else db.create_engine(url_or_engine)
    try:
        with engine.connect() as conn:  # refuse before the work of building the rows
            if not force and (foreign := foreign_tables(conn)):
                raise NotADemoDatabase(foreign)
        frames = build_demo_frames(students=students, days=days, seed=seed, now=anchor)
        say(f"built {sum(len(f) for f in frames.values()):,} rows in {time.perf_counter() - began:.1f} s")
        with engine.begin() as conn:
            _reset_schema(
                conn,
                indexes=False,
                force=force,
                students=students,
                days=days,
                seed=seed,
                history_start=(anchor - dt.timedelta(days=days)).date(),
            )
            for name, frame in frames.items():
                db.bulk_insert(conn, REFERENCE.tables[name], frame)
                say(f"loaded {name} ({len(frame):,} rows) at {time.perf_counter() - began:.1f} s")
            _create_indexes(conn)
            say(f"indexed at {time.perf_counter() - began:.1f} s")
    finally:
        if owned:
            engine.dispose()
    users = frames["Users"]
    return DemoSummary(
        students=int((users["role"] == "student").sum()),
        mentors=int((users["role"] == "mentor").sum()),
        courses=len(frames["Courses"]),
        exams=len(frames["Exams"]),
        contents=len(frames["Contents"]),
        mentor_assignments=len(frames["MentorAssignments"]),
        attempts=len(frames["Attempts"]),
        content_attempts=len(frames["ContentAttempts"]),
        seconds=time.perf_counter() - began,
    )


def _check_sizes(students: int, days: int) -> None:
    if students < 1:
        raise ValueError("--students must be >= 1")
    if days < 1:
        raise ValueError("--days must be >= 1")


def build_demo_frames(
    *, students: int = 50, days: int = 14, seed: int = 42, now: dt.datetime | None = None
) -> dict[str, pd.DataFrame]:
    """The demo LMS rows, one DataFrame per reference table, in load order (no database involved).

    Raises ``ValueError`` naming the CLI option when ``students`` or ``days`` is below 1.
    """
    _check_sizes(students, days)
    now_s = _epoch_seconds(now if now is not None else default_now())
    cat = _catalogue(_rng(seed, 0), students)
    frames = {
        "Users": _users_frame(_rng(seed, 1), cat),
        "Courses": pd.DataFrame({"id": cat.course_ids, "title": COURSE_TITLES[: len(cat.course_ids)]}),
        "Exams": _exams_frame(cat),
        "Contents": _contents_frame(cat),
        "MentorAssignments": _assignments_frame(_rng(seed, 2), cat, now_s, days),
        "Attempts": _attempts_frame(_rng(seed, 3), cat, now_s, days),
        "ContentAttempts": _content_attempts_frame(_rng(seed, 4), cat, now_s, days),
    }
    # students at risk: a cohort that fails and goes silent (some come back), in demos big enough for one
    if students >= COHORT_MIN_STUDENTS and days >= COHORT_MIN_DAYS:
        frames["Attempts"], frames["ContentAttempts"] = plant_struggling_cohort(
            _rng(seed, 5), cat, frames["Attempts"], frames["ContentAttempts"], now_s, days
        )
    return frames


def default_now() -> dt.datetime:
    """The current UTC time truncated to the minute."""
    return dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)


# --------------------------------------------------------------------------- schema


def _reset_schema(conn: Connection, *, indexes: bool = True, force: bool = False, **marker: object) -> None:
    """Drop and create the reference tables and the demo marker on ``conn``; secondary indexes only if ``indexes``.

    Refuses (:class:`NotADemoDatabase`) a database holding tables that are not a demo's, unless
    ``force``. Loading before indexing is faster; :func:`_create_indexes` adds them after.
    ``marker``: the demo's ``students``, ``days``, ``seed`` and ``history_start``, recorded in the marker row.
    """
    foreign = foreign_tables(conn)
    if foreign and not force:
        raise NotADemoDatabase(foreign)
    REFERENCE.drop_all(conn)
    DEMO_MARKER.drop(conn, checkfirst=True)
    for table in [*REFERENCE.sorted_tables, DEMO_MARKER]:
        conn.execute(sa.schema.CreateTable(table))
    conn.execute(DEMO_MARKER.insert().values(generated_at=dt.datetime.now(dt.UTC), **marker))
    if indexes:
        _create_indexes(conn)


def _create_indexes(conn: Connection) -> None:
    """Create the secondary indexes declared in ``REFERENCE``."""
    for table in REFERENCE.sorted_tables:
        for index in table.indexes:
            index.create(conn)


# --------------------------------------------------------------------------- helpers


def _rng(seed: int, stream: int) -> np.random.Generator:
    """An independent, reproducible random stream per table, so tables don't shift each other."""
    return np.random.default_rng([stream, seed])


def _epoch_seconds(value: dt.datetime) -> int:
    """Whole UTC seconds since the epoch (naive values are UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return int(value.timestamp() // 1)


def _timestamps(seconds: np.ndarray, present: np.ndarray | None = None) -> pd.Series:
    """UTC timestamps from epoch seconds; NaT where ``present`` is False."""
    values = np.asarray(seconds, dtype="int64").astype("datetime64[s]").astype("datetime64[ns]")
    if present is not None:
        values = np.where(present, values, np.datetime64("NaT", "ns"))
    return pd.Series(values).dt.tz_localize("UTC")


def _labels(codes: np.ndarray, names: list[str]) -> pd.Categorical[str]:
    """Text values from integer codes (a categorical: cheap for millions of rows)."""
    return pd.Categorical.from_codes(codes.astype(np.int64), categories=pd.Index(names))


def _nullable_float(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``values`` as floats with NaN (SQL NULL) where ``present`` is False."""
    return np.where(present, values.astype(float), np.nan)


def _pick(rng: np.random.Generator, mask: np.ndarray, fraction: float, minimum: int) -> np.ndarray:
    """Sorted indices of about ``fraction`` of the rows where ``mask`` holds (at least ``minimum`` if possible).

    One random key is drawn per row whatever the mask, so how many rows
    qualify never shifts the later draws: a slightly different ``now``
    changes a few rows, not the whole LMS.
    """
    keys = rng.random(len(mask))
    candidates = np.flatnonzero(mask)
    count = min(len(candidates), max(minimum, round(fraction * len(candidates))))
    return np.sort(candidates[np.argsort(keys[candidates], kind="stable")[:count]])


def _sample_times(rng: np.random.Generator, n: int, now_s: int, days: int) -> np.ndarray:
    """``n`` epoch seconds in ``[now - days, now)`` following :data:`HOUR_WEIGHTS` by hour of day."""
    window_start = now_s - days * DAY
    first_midnight = window_start - window_start % DAY
    day = rng.integers(0, days, n)
    hour = rng.choice(24, size=n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    times = first_midnight + day * DAY + hour * HOUR + rng.integers(0, HOUR, n)
    # wrap whole days around the window: keeps the time of day, lands in [now - days, now)
    return window_start + (times - window_start) % (days * DAY)


def _names(rng: np.random.Generator, ids: np.ndarray) -> tuple[pd.Series, pd.Series]:
    """Full names and unique usernames (``first.last<id>``) for ``ids``."""
    first = pd.Series(FIRST_NAMES[rng.integers(0, len(FIRST_NAMES), len(ids))])
    last = pd.Series(LAST_NAMES[rng.integers(0, len(LAST_NAMES), len(ids))])
    full = first + " " + last
    username = first.str.lower() + "." + last.str.lower() + pd.Series(ids).astype(str)
    return full, username


# --------------------------------------------------------------------------- dimensions


def _catalogue(rng: np.random.Generator, students: int) -> _Catalogue:
    """Who and what exists: users' ids, courses, exams (scores) and contents (types, lengths)."""
    n_mentors = max(2, round(students / 10))
    n_staff = 2 if students >= 20 else 1
    n_courses = min(MAX_COURSES, 5 + students // 2500)
    student_ids = np.arange(1, students + 1)
    mentor_ids = np.arange(students + 1, students + n_mentors + 1)
    inactive = np.zeros(students, dtype=bool)
    inactive[_pick(rng, np.ones(students, dtype=bool), 0.02, 1 if students >= 10 else 0)] = True

    exams_per_course = len(EXAM_TITLES)
    exam_course = np.repeat(np.arange(1, n_courses + 1), exams_per_course)
    exam_max = np.tile(EXAM_MAX_SCORES, n_courses)
    exam_pass = np.round(exam_max * rng.choice(PASS_FRACTIONS, size=len(exam_max))).astype(int)

    types = rng.permuted(np.tile(CONTENT_MIX, (n_courses, 1)), axis=1).ravel()
    duration = np.select(
        [types == VIDEO, types == AUDIO],
        [rng.integers(18, 181, len(types)) * 10, rng.integers(30, 271, len(types)) * 10],
        default=0,
    )
    return _Catalogue(
        n_students=students,
        n_mentors=n_mentors,
        n_staff=n_staff,
        student_ids=student_ids,
        mentor_ids=mentor_ids,
        student_inactive=inactive,
        course_ids=np.arange(1, n_courses + 1),
        exam_course=exam_course,
        exam_max=exam_max,
        exam_pass=exam_pass,
        content_course=np.repeat(np.arange(1, n_courses + 1), len(CONTENT_MIX)),
        content_type=types,
        content_duration=duration,
    )


def _users_frame(rng: np.random.Generator, cat: _Catalogue) -> pd.DataFrame:
    """Students, then mentors, then staff; emails ``<username>@example.edu``; a few inactive."""
    n = cat.n_students + cat.n_mentors + cat.n_staff
    ids = np.arange(1, n + 1)
    full, username = _names(rng, ids)
    role = np.repeat(["student", "mentor", "staff"], [cat.n_students, cat.n_mentors, cat.n_staff])
    active = np.ones(n, dtype=bool)
    active[: cat.n_students] = ~cat.student_inactive
    if cat.n_staff > 1:
        active[-1] = False  # a former staff member
    return pd.DataFrame(
        {
            "id": ids,
            "username": username,
            "email": username + "@example.edu",
            "full_name": full,
            "role": role,
            "is_active": active,
        }
    )


def _exams_frame(cat: _Catalogue) -> pd.DataFrame:
    """Four exams per course: two 50-point quizzes, a 100-point midterm and final."""
    course_titles = pd.Series(COURSE_TITLES[cat.exam_course - 1])
    exam_titles = pd.Series(np.tile(EXAM_TITLES, len(cat.course_ids)))
    return pd.DataFrame(
        {
            "id": np.arange(1, len(cat.exam_course) + 1),
            "course_id": cat.exam_course,
            "title": course_titles + " — " + exam_titles,
            "max_score": cat.exam_max.astype(float),
            "pass_score": cat.exam_pass.astype(float),
        }
    )


def _contents_frame(cat: _Catalogue) -> pd.DataFrame:
    """Eight contents per course; ``duration_seconds`` only for video and audio."""
    types = cat.content_type
    number = pd.DataFrame({"c": cat.content_course, "t": types}).groupby(["c", "t"]).cumcount() + 1
    titles = pd.Series(COURSE_TITLES[cat.content_course - 1]) + " — " + CONTENT_LABELS[types] + " " + number.astype(str)
    media = types <= AUDIO
    return pd.DataFrame(
        {
            "id": np.arange(1, len(types) + 1),
            "course_id": cat.content_course,
            "title": titles,
            "content_type": CONTENT_TYPES[types],
            "duration_seconds": pd.Series(cat.content_duration, dtype="Int64").where(media),
        }
    )


def _assignments_frame(rng: np.random.Generator, cat: _Catalogue, now_s: int, days: int) -> pd.DataFrame:
    """Every student has an active mentor; ~20 % a second one; ~10 % an ended earlier one.

    An ended assignment hands over to the current mentor at ``ended_at``
    (sometimes inside the generated window), so events before the handover
    belong to the earlier mentor.
    """
    n, m = cat.n_students, cat.n_mentors
    window_start = now_s - days * DAY
    primary = rng.integers(0, m, n)
    has_history = rng.random(n) < 0.10
    has_second = rng.random(n) < 0.20
    previous = (primary + rng.integers(1, m, n)) % m
    second = (primary + rng.integers(1, m, n)) % m
    if m >= 3:  # keep the second mentor distinct from the earlier one too
        second = np.where(has_history & (second == previous), (second + 1) % m, second)
        second = np.where(second == primary, (second + 1) % m, second)

    handover = rng.integers(window_start - 20 * DAY, now_s - HOUR, n)
    primary_at = np.where(has_history, handover, window_start - rng.integers(DAY, 90 * DAY, n))
    previous_at = window_start - rng.integers(30 * DAY, 120 * DAY, n)
    second_at = rng.integers(window_start - 60 * DAY, now_s - HOUR, n)

    students = np.concatenate([cat.student_ids, cat.student_ids[has_history], cat.student_ids[has_second]])
    mentors = cat.mentor_ids[np.concatenate([primary, previous[has_history], second[has_second]])]
    assigned = np.concatenate([primary_at, previous_at[has_history], second_at[has_second]])
    ended = np.concatenate(
        [np.zeros(n, dtype=np.int64), handover[has_history], np.zeros(int(has_second.sum()), dtype=np.int64)]
    )
    is_ended = np.concatenate(
        [np.zeros(n, bool), np.ones(int(has_history.sum()), bool), np.zeros(int(has_second.sum()), bool)]
    )

    order = np.lexsort((mentors, students, assigned))
    return pd.DataFrame(
        {
            "id": np.arange(1, len(order) + 1),
            "student_id": students[order],
            "mentor_id": mentors[order],
            "assigned_at": _timestamps(assigned[order]),
            "ended_at": _timestamps(ended[order], is_ended[order]),
        }
    )


# --------------------------------------------------------------------------- activity


def _activity_targets(
    rng: np.random.Generator, cat: _Catalogue, n: int, per_course: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (student index, item index) pairs: busier students do more, within their 2-3 courses.

    Items are numbered course by course, ``per_course`` items per course.
    """
    n_courses = len(cat.course_ids)
    weight = rng.gamma(2.0, 1.0, cat.n_students) * np.where(cat.student_inactive, 0.2, 1.0)
    student = rng.choice(cat.n_students, size=n, p=weight / weight.sum())
    enrolled = np.argsort(rng.random((cat.n_students, n_courses)), axis=1)[:, :3]
    n_enrolled = np.minimum(rng.integers(2, 4, cat.n_students), n_courses)
    course = enrolled[student, (rng.random(n) * n_enrolled[student]).astype(int)]
    item = course * per_course + rng.integers(0, per_course, n)
    return student, item


def _recent_burst(rng: np.random.Generator, n: int, now_s: int, days: int, start: np.ndarray) -> np.ndarray:
    """Move another half hour's worth of rows (at least 3) into the last 30 minutes; return their indices.

    Live activity right now, even in a tiny demo.
    """
    burst = np.sort(rng.choice(n, size=min(n, max(3, round(n / (days * 48)))), replace=False))
    start[burst] = now_s - rng.integers(MINUTE, 30 * MINUTE, len(burst))
    return burst


def _attempts_frame(rng: np.random.Generator, cat: _Catalogue, now_s: int, days: int) -> pd.DataFrame:
    """Exam attempts in every state, with retakes, midnight-spanning and next-day grading.

    Attempts of the same exam by the same student are sequential: each one's
    submission and grading happen before the next one starts (an attempt that
    could not finish before the retake started was abandoned).
    """
    n = max(MIN_EXAM_ATTEMPTS, round(EXAM_ATTEMPT_RATE * cat.n_students * days))
    student, exam = _activity_targets(rng, cat, n, len(EXAM_TITLES))
    start = _sample_times(rng, n, now_s, days)
    duration = rng.integers(5 * MINUTE, 90 * MINUTE, n)
    auto_graded = rng.random(n) < 0.6
    grade_delay = np.where(auto_graded, rng.integers(2, 120, n), rng.integers(HOUR, 36 * HOUR, n))
    abandoned = rng.random(n) < 0.06
    never_graded = ~auto_graded & (rng.random(n) < 0.03)

    abandoned[_recent_burst(rng, n, now_s, days, start)] = False
    late = _span_midnight(rng, start, duration, abandoned, now_s)
    never_graded[late] = False

    # sequence attempts per (student, exam): sorted by start, each row linked to the next of its pair
    order = np.lexsort((start, exam, student))
    student, exam, start = student[order], exam[order], start[order]
    duration, grade_delay = duration[order], grade_delay[order]
    abandoned, never_graded = abandoned[order], never_graded[order]
    same_next = np.zeros(n, dtype=bool)
    same_next[:-1] = (student[1:] == student[:-1]) & (exam[1:] == exam[:-1])

    # live attempts: about half of the latest attempts started in the last 30 minutes are still running
    running = _pick(rng, ~same_next & (start >= now_s - 30 * MINUTE), 0.5, 1)
    still_running_for = rng.integers(MINUTE, HOUR, n)
    duration[running] = now_s - start[running] + still_running_for[running]
    abandoned[running] = False
    grade_delay = _fit_before_retake(rng, start, duration, grade_delay, abandoned, same_next)

    submitted = start + duration
    in_progress = ~abandoned & (submitted > now_s)
    has_submitted = ~abandoned & ~in_progress
    graded = start + duration + grade_delay
    has_graded = has_submitted & ~never_graded & (graded <= now_s)
    status = np.select([abandoned, in_progress, has_graded], [3, 0, 2], default=1)

    score = _exam_scores(rng, cat, student, exam, _running_index(same_next), has_graded)
    latest = np.where(has_graded, graded, np.where(has_submitted, submitted, start))
    updated = np.minimum(now_s, latest + rng.integers(0, 6, n))

    ids = np.lexsort((exam, student, start))  # ids in the order attempts were created
    return pd.DataFrame(
        {
            "id": np.arange(1, n + 1),
            "user_id": cat.student_ids[student[ids]],
            "exam_id": exam[ids] + 1,
            "status": _labels(status[ids], EXAM_STATUSES),
            "started_at": _timestamps(start[ids]),
            "submitted_at": _timestamps(submitted[ids], has_submitted[ids]),
            "graded_at": _timestamps(graded[ids], has_graded[ids]),
            "score": _nullable_float(score[ids], has_graded[ids]),
            "updated_at": _timestamps(updated[ids]),
        }
    )


def _span_midnight(
    rng: np.random.Generator, start: np.ndarray, duration: np.ndarray, abandoned: np.ndarray, now_s: int
) -> np.ndarray:
    """Move ~1 % of finished attempts (at least 2) to start before midnight and end after it.

    Changes ``start`` and ``duration`` in place; returns the indices moved.
    """
    day_end = start - start % DAY + DAY
    late = _pick(rng, (day_end + 2 * HOUR < now_s) & ~abandoned, 0.01, 2)
    before, after = rng.integers(5 * MINUTE, 40 * MINUTE, len(start)), rng.integers(2 * MINUTE, 30 * MINUTE, len(start))
    start[late] = day_end[late] - before[late]
    duration[late] = before[late] + after[late]
    return late


def _fit_before_retake(
    rng: np.random.Generator,
    start: np.ndarray,
    duration: np.ndarray,
    grade_delay: np.ndarray,
    abandoned: np.ndarray,
    same_next: np.ndarray,
) -> np.ndarray:
    """Make each attempt end before the student's next attempt of the same exam starts.

    Rows are sorted by (student, exam, start). An attempt that could not be
    submitted in time was abandoned (``abandoned`` is updated in place); one
    graded too late is graded sooner. Returns the adjusted grading delays.
    """
    next_start = np.where(same_next, np.append(start[1:], 0), np.iinfo(np.int64).max)
    room = next_start - start
    abandoned |= same_next & (duration + MINUTE >= room)
    squeeze = same_next & ~abandoned & (duration + grade_delay + 5 >= room)
    quicker = np.maximum(1, ((room - duration) * rng.uniform(0.2, 0.8, len(start))).astype(np.int64))
    return np.where(squeeze, quicker, grade_delay)


def _running_index(same_next: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within runs of sorted rows, where ``same_next[i]`` links row i to row i+1."""
    n = len(same_next)
    run_start = np.ones(n, dtype=bool)
    run_start[1:] = ~same_next[:-1]
    first = np.maximum.accumulate(np.where(run_start, np.arange(n), 0))
    return np.arange(n) - first


def _exam_scores(
    rng: np.random.Generator,
    cat: _Catalogue,
    student: np.ndarray,
    exam: np.ndarray,
    attempt_index: np.ndarray,
    graded: np.ndarray,
) -> np.ndarray:
    """Whole-point scores from ability, exam difficulty, practice and luck; a few exactly at the pass mark."""
    ability = rng.normal(0.72, 0.13, cat.n_students)
    difficulty = rng.normal(0.0, 0.06, len(cat.exam_max))
    pct = ability[student] - difficulty[exam] + np.minimum(0.04 * attempt_index, 0.15) + rng.normal(0, 0.1, len(exam))
    score = np.round(np.clip(pct, 0.0, 1.0) * cat.exam_max[exam])
    exact = _pick(rng, graded, 0.02, 1)
    score[exact] = cat.exam_pass[exam[exact]]
    return score


def _content_attempts_frame(rng: np.random.Generator, cat: _Catalogue, now_s: int, days: int) -> pd.DataFrame:
    """Content attempts started, in progress and completed; videos at exactly 89.9 % and 90 %.

    Time spent follows the content: media around its length, reading and
    exercises minutes. A completion that would lie after ``now`` is still in
    progress, with the progress reached so far.
    """
    n = max(MIN_CONTENT_ATTEMPTS, round(CONTENT_ATTEMPT_RATE * cat.n_students * days))
    student, content = _activity_targets(rng, cat, n, len(CONTENT_MIX))
    start = _sample_times(rng, n, now_s, days)
    _recent_burst(rng, n, now_s, days, start)
    ctype = cat.content_type[content]
    media = ctype <= AUDIO
    low, high = (READING_MINUTES[ctype] * MINUTE).T
    full = np.where(media, cat.content_duration[content] * rng.uniform(0.95, 1.25, n), rng.uniform(low, high))

    roll = rng.random(n)
    completed = roll < 0.55
    started_only = roll >= 0.85
    progress = np.where(completed, 100.0, np.where(started_only, 0.0, np.round(rng.uniform(5, 99, n), 1)))
    progress = np.where(started_only & (rng.random(n) < 0.3), np.round(rng.uniform(0.1, 5, n), 1), progress)
    near_done = completed & media & (rng.random(n) < 0.15)
    progress = np.where(near_done, np.round(rng.uniform(97, 99.9, n), 1), progress)
    # videos right at the "watched" threshold (>= 90 %); old enough to be finished as drawn
    at_threshold = (ctype == VIDEO) & ~completed & ~started_only & (start + 2 * HOUR < now_s)
    for mark in (89.9, 90.0):
        progress[_pick(rng, at_threshold & (progress != 89.9), 0.05, 1)] = mark

    spent = np.where(started_only, rng.integers(0, 31, n), full * progress / 100.0)
    wall = spent * rng.uniform(1.0, 1.6, n) + rng.integers(0, 120, n)
    finish = start + wall.astype(np.int64)

    # not finished yet: still in progress with what was reached by now
    unfinished = ~started_only & (finish > now_s)
    reached = np.clip((now_s - start) / np.maximum(wall, 1), 0.0, 1.0)
    progress = np.where(unfinished, np.minimum(np.floor(progress * reached * 10) / 10, 99.0), progress)
    spent = np.where(unfinished, spent * reached, spent)
    completed &= ~unfinished
    finish = np.minimum(finish, now_s)
    spent = np.minimum(spent, finish - start)
    status = np.where(completed, 2, np.where(started_only, 0, 1))
    updated = np.minimum(now_s, finish + rng.integers(0, 6, n))

    ids = np.lexsort((content, student, start))
    return pd.DataFrame(
        {
            "id": np.arange(1, n + 1),
            "user_id": cat.student_ids[student[ids]],
            "content_id": content[ids] + 1,
            "status": _labels(status[ids], CONTENT_STATUSES),
            "progress_percent": progress[ids],
            "time_spent_seconds": np.floor(spent[ids]).astype(np.int64),
            "started_at": _timestamps(start[ids]),
            "completed_at": _timestamps(finish[ids], completed[ids]),
            "updated_at": _timestamps(updated[ids]),
        }
    )


def ensure_demo_lms(settings: Settings) -> bool:
    """With no ``LMS_DATABASE_URL`` (the demo LMS under ``LMS_HOME``) and no demo there yet, create it, so
    the first ``lms-activity monitor --once`` or the UI's first sensor tick has an LMS to read. True when
    it created one."""
    if not settings.lms_url_is_default or settings.demo_lms_path.exists():
        return False
    generate_demo_lms(settings.lms_database_url)
    return True


# --------------------------------------------------------------------------- students at risk

#: The struggling cohort: this share of the students, planted from this many students and days on.
COHORT_SHARE = 0.08
COHORT_MIN_STUDENTS = 100
COHORT_MIN_DAYS = 10
#: Of the cohort, this share comes back after a silence and passes from then on.
COHORT_RECOVER_SHARE = 0.3
EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def struggling_cohort(rng: np.random.Generator, cat: _Catalogue, now_s: int, days: int) -> pd.DataFrame:
    """Who struggles: ``student_id``, when they go silent (``silent_from``, epoch s), whether and when they
    come back (``back_from``; -1: never)."""
    size = max(1, round(COHORT_SHARE * cat.n_students))
    who = np.sort(rng.choice(cat.student_ids, size=size, replace=False))
    silent_from = now_s - (rng.uniform(0.3, 0.8, size) * days * DAY).astype(np.int64)
    recovers = rng.random(size) < COHORT_RECOVER_SHARE
    back_from = np.where(recovers, silent_from + rng.integers(4, 8, size) * DAY, -1)
    back_from = np.where(back_from >= now_s, -1, back_from)
    return pd.DataFrame({"student_id": who, "silent_from": silent_from, "back_from": back_from})


def plant_struggling_cohort(
    rng: np.random.Generator,
    cat: _Catalogue,
    attempts: pd.DataFrame,
    contents: pd.DataFrame,
    now_s: int,
    days: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The cohort fails every exam it takes and leaves videos half watched, then has no activity from
    ``silent_from`` on (its attempts there are removed); those who come back pass what they take from
    ``back_from`` on. Other students' rows are untouched."""
    cohort = struggling_cohort(rng, cat, now_s, days).set_index("student_id")

    def plan(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        member = frame["user_id"].isin(cohort.index).to_numpy()
        started = ((frame["started_at"] - EPOCH) // pd.Timedelta(seconds=1)).to_numpy()
        silent = frame["user_id"].map(cohort["silent_from"]).fillna(np.inf).to_numpy()
        back = frame["user_id"].map(cohort["back_from"]).fillna(-1).to_numpy()
        returned = member & (back >= 0) & (started >= back)
        dropped = member & (started >= silent) & ~returned
        return member & ~dropped & ~returned, returned, dropped

    failing, passing, dropped = plan(attempts)
    exams = attempts.copy()
    exam_index = exams["exam_id"].to_numpy() - 1
    graded = exams["score"].notna().to_numpy()
    pass_mark = cat.exam_pass[exam_index]
    low = np.floor(pass_mark * rng.uniform(0.35, 0.9, len(exams)))
    high = np.minimum(cat.exam_max[exam_index], pass_mark + rng.integers(1, 10, len(exams)))
    score = exams["score"].to_numpy(dtype=float, na_value=np.nan)
    score = np.where(graded & failing, low, np.where(graded & passing, high, score))
    exams["score"] = np.where(graded, score, np.nan)
    exams = exams[~dropped].reset_index(drop=True)

    stalled, _, dropped = plan(contents)
    media = np.isin(cat.content_type[contents["content_id"].to_numpy() - 1], (VIDEO, AUDIO))
    half = stalled & media & (rng.random(len(contents)) < 0.6)
    reading = contents.copy()
    reading["progress_percent"] = np.where(
        half, np.round(rng.uniform(10, 60, len(reading)), 1), reading["progress_percent"]
    )
    reading["status"] = reading["status"].astype(object).where(~half, "in_progress")
    reading["completed_at"] = reading["completed_at"].where(~half, pd.NaT)
    reading["time_spent_seconds"] = np.where(
        half, (reading["time_spent_seconds"] * 0.4).astype(np.int64), reading["time_spent_seconds"]
    )
    reading["status"] = _labels(
        reading["status"].map({s: i for i, s in enumerate(CONTENT_STATUSES)}).to_numpy(), CONTENT_STATUSES
    )
    return exams, reading[~dropped].reset_index(drop=True)
