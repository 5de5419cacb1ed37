"""The deterministic demo LMS, generated into real SQLite files and a real PostgreSQL database."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from lms_activity_pipeline import db
from lms_activity_pipeline.lms.demo import (
    DEMO_MARKER,
    DemoSummary,
    NotADemoDatabase,
    create_lms_schema,
    generate_demo_lms,
)
from lms_activity_pipeline.lms.schema import REFERENCE
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.support.lms_builder import LMSBuilder

NOW = dt.datetime(2024, 5, 20, 10, 30, tzinfo=dt.UTC)
TABLES = ["Users", "Courses", "Exams", "Contents", "MentorAssignments", "Attempts", "ContentAttempts"]


def read_lms(url: str) -> dict[str, pd.DataFrame]:
    """Every reference table as stored, normalised: UTC timestamps, floats, ints, bools, ordered by id."""
    engine = db.create_engine(url)
    try:
        with engine.connect() as conn:
            frames = {
                name: _normalise(REFERENCE.tables[name], db.read_frame(conn, sa.select(REFERENCE.tables[name])))
                for name in TABLES
            }
    finally:
        engine.dispose()
    return frames


def _normalise(table: sa.Table, frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=frame.index)
    for col in table.columns:
        values = frame[col.name]
        if isinstance(col.type, sa.DateTime):
            out[col.name] = pd.to_datetime(values, utc=True, format="ISO8601")
        elif isinstance(col.type, sa.Boolean):
            out[col.name] = values.astype(str).str.lower().isin(["1", "true", "t"])
        elif isinstance(col.type, sa.Numeric) and not isinstance(col.type, sa.Integer):
            out[col.name] = pd.to_numeric(values).astype(float)
        elif isinstance(col.type, sa.Integer):
            out[col.name] = pd.to_numeric(values).astype("Int64")
        else:
            out[col.name] = values.astype(object)
    return out.sort_values("id").reset_index(drop=True)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoSummary, dict[str, pd.DataFrame]]:
    """The default demo (50 students, 14 days, seed 42) at a fixed ``now``, read back from SQLite."""
    url = sqlite_url(tmp_path_factory.mktemp("demo") / "nested" / "lms.sqlite3")
    summary = generate_demo_lms(url, now=NOW)
    return summary, read_lms(url)


@pytest.fixture
def lms(demo: tuple[DemoSummary, dict[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    return demo[1]


# --------------------------------------------------------------------------- arguments and determinism


@pytest.mark.unit
@pytest.mark.parametrize(("option", "kwargs"), [("--students", {"students": 0}), ("--days", {"days": 0})])
def test_rejects_non_positive_sizes_naming_the_option(tmp_path: Path, option: str, kwargs: dict[str, int]) -> None:
    url = sqlite_url(tmp_path / "lms.sqlite3")
    with pytest.raises(ValueError, match=f"^{option} must be >= 1$"):
        generate_demo_lms(url, now=NOW, **kwargs)
    assert not (tmp_path / "lms.sqlite3").exists()


@pytest.mark.unit
def test_same_arguments_give_identical_rows(tmp_path: Path, lms: dict[str, pd.DataFrame]) -> None:
    again = sqlite_url(tmp_path / "again.sqlite3")
    generate_demo_lms(again, students=50, days=14, seed=42, now=NOW)
    second = read_lms(again)
    for name in TABLES:
        pd.testing.assert_frame_equal(lms[name], second[name], obj=name)


@pytest.mark.unit
def test_another_seed_gives_other_activity(tmp_path: Path, lms: dict[str, pd.DataFrame]) -> None:
    other = sqlite_url(tmp_path / "other.sqlite3")
    generate_demo_lms(other, seed=7, now=NOW)
    attempts = read_lms(other)["Attempts"]
    assert len(attempts) == len(lms["Attempts"])
    assert not attempts[["user_id", "exam_id", "started_at"]].equals(
        lms["Attempts"][["user_id", "exam_id", "started_at"]]
    )


@pytest.mark.unit
def test_summary_counts_match_the_database_and_the_scale(demo: tuple[DemoSummary, dict[str, pd.DataFrame]]) -> None:
    summary, lms = demo
    users = lms["Users"]
    assert summary.students == (users["role"] == "student").sum() == 50
    assert summary.mentors == (users["role"] == "mentor").sum() == 5
    assert summary.courses == len(lms["Courses"]) == 5
    assert summary.exams == len(lms["Exams"])
    assert summary.contents == len(lms["Contents"])
    assert summary.mentor_assignments == len(lms["MentorAssignments"])
    assert summary.attempts == len(lms["Attempts"]) == 350  # 0.5 per student per day
    assert summary.content_attempts == len(lms["ContentAttempts"]) == 700  # 1.0 per student per day
    assert summary.seconds > 0


@pytest.mark.unit
def test_ids_start_at_one_and_are_unique(lms: dict[str, pd.DataFrame]) -> None:
    for name, frame in lms.items():
        assert frame["id"].tolist() == list(range(1, len(frame) + 1)), name


# --------------------------------------------------------------------------- dimensions


@pytest.mark.unit
def test_users_roles_emails_and_inactive_accounts(lms: dict[str, pd.DataFrame]) -> None:
    users = lms["Users"]
    assert users["username"].is_unique
    assert (users["email"] == users["username"] + "@example.edu").all()
    assert users["full_name"].str.match(r"^[A-Z][a-z]+ [A-Z][a-z]+$").all()
    assert 1 <= (users["role"] == "staff").sum() <= 2
    assert set(users["role"]) == {"student", "mentor", "staff"}
    assert 1 <= (~users["is_active"]).sum() <= 5
    assert users.loc[users["role"] == "mentor", "is_active"].all()


@pytest.mark.unit
def test_exams_and_contents(lms: dict[str, pd.DataFrame]) -> None:
    exams, contents = lms["Exams"], lms["Contents"]
    assert set(exams["course_id"]) == set(lms["Courses"]["id"])
    assert exams.groupby("course_id").size().eq(4).all()
    assert set(exams["max_score"]) == {50.0, 100.0}
    ratio = exams["pass_score"] / exams["max_score"]
    assert ratio.between(0.6, 0.7).all()
    assert contents.groupby("course_id").size().eq(8).all()
    assert set(contents["content_type"]) == {"video", "audio", "article", "document", "interactive"}
    media = contents["content_type"].isin(["video", "audio"])
    assert contents.loc[media, "duration_seconds"].gt(0).all()
    assert contents.loc[~media, "duration_seconds"].isna().all()


@pytest.mark.unit
def test_every_student_has_an_active_mentor(lms: dict[str, pd.DataFrame]) -> None:
    users, assignments = lms["Users"], lms["MentorAssignments"]
    students = set(users.loc[users["role"] == "student", "id"])
    mentors = set(users.loc[users["role"] == "mentor", "id"])
    assert set(assignments["student_id"]) == students
    assert set(assignments["mentor_id"]) <= mentors
    active = assignments[assignments["ended_at"].isna()]
    assert set(active["student_id"]) == students
    per_student = active.groupby("student_id").size()
    assert per_student.max() == 2 and 0.05 <= per_student.eq(2).mean() <= 0.40
    assert not active.duplicated(["student_id", "mentor_id"]).any()
    ended = assignments[assignments["ended_at"].notna()]
    assert 1 <= len(ended) <= 0.25 * len(students)
    for row in ended.itertuples():
        current = active[active["student_id"] == row.student_id]
        assert row.mentor_id not in set(current["mentor_id"])
        assert row.assigned_at < row.ended_at <= NOW
        assert (current["assigned_at"] >= row.ended_at).any()  # handed over when the old one ended
    assert (assignments["assigned_at"] <= NOW).all()


# --------------------------------------------------------------------------- exam attempts


@pytest.mark.unit
def test_attempts_refer_to_students_and_existing_exams(lms: dict[str, pd.DataFrame]) -> None:
    users = lms["Users"]
    students = set(users.loc[users["role"] == "student", "id"])
    assert set(lms["Attempts"]["user_id"]) <= students
    assert set(lms["Attempts"]["exam_id"]) <= set(lms["Exams"]["id"])
    assert set(lms["ContentAttempts"]["user_id"]) <= students
    assert set(lms["ContentAttempts"]["content_id"]) <= set(lms["Contents"]["id"])


@pytest.mark.unit
def test_attempts_in_every_state_with_matching_columns(lms: dict[str, pd.DataFrame]) -> None:
    a = lms["Attempts"]
    by_status = {s: a[a["status"] == s] for s in ("in_progress", "abandoned", "submitted", "graded")}
    assert all(len(rows) for rows in by_status.values()), a["status"].value_counts().to_dict()
    assert set(a["status"]) == set(by_status)
    for status in ("in_progress", "abandoned"):
        rows = by_status[status]
        assert rows[["submitted_at", "graded_at", "score"]].isna().all().all(), status
    assert by_status["submitted"]["submitted_at"].notna().all()
    assert by_status["submitted"][["graded_at", "score"]].isna().all().all()
    assert by_status["graded"][["submitted_at", "graded_at", "score"]].notna().all().all()
    # in-progress attempts are live: started within the last two hours
    assert (by_status["in_progress"]["started_at"] >= NOW - dt.timedelta(hours=2)).all()


@pytest.mark.unit
def test_attempt_outcomes_failures_exact_passes_and_late_grading(lms: dict[str, pd.DataFrame]) -> None:
    graded = lms["Attempts"].merge(lms["Exams"], left_on="exam_id", right_on="id", suffixes=("", "_exam"))
    graded = graded[graded["status"] == "graded"]
    assert graded["score"].between(0, graded["max_score"]).all()
    assert (graded["score"] == graded["score"].round()).all()
    failed = graded["score"] < graded["pass_score"]
    assert 0.1 < failed.mean() < 0.6
    assert (graded["score"] == graded["pass_score"]).any()
    next_day = graded["graded_at"].dt.date > graded["submitted_at"].dt.date
    assert next_day.any()


@pytest.mark.unit
def test_attempts_spanning_midnight(lms: dict[str, pd.DataFrame]) -> None:
    submitted = lms["Attempts"].dropna(subset=["submitted_at"])
    spans = submitted[submitted["started_at"].dt.date < submitted["submitted_at"].dt.date]
    assert len(spans) >= 2
    assert (spans["started_at"].dt.hour >= 22).all()  # exams last at most 90 minutes


@pytest.mark.unit
def test_retakes_follow_a_graded_failure(lms: dict[str, pd.DataFrame]) -> None:
    a = lms["Attempts"].merge(lms["Exams"][["id", "pass_score"]].rename(columns={"id": "exam_id"}), on="exam_id")
    a = a.sort_values(["user_id", "exam_id", "started_at", "id"])
    nxt = a.groupby(["user_id", "exam_id"]).shift(-1)
    has_next = nxt["started_at"].notna()
    # attempts of one exam by one student never overlap: each ends before the next starts
    ends = a[["started_at", "submitted_at", "graded_at"]].max(axis=1)
    assert (ends[has_next] < nxt.loc[has_next, "started_at"]).all()
    assert (a.loc[has_next, "status"] != "in_progress").all()
    retake_after_fail = has_next & (a["status"] == "graded") & (a["score"] < a["pass_score"])
    assert retake_after_fail.sum() >= 3
    # ids follow creation order, so a retake has a larger id
    assert (nxt.loc[has_next, "id"] > a.loc[has_next, "id"]).all()


@pytest.mark.unit
def test_attempt_timestamps_are_ordered_and_not_after_now(lms: dict[str, pd.DataFrame]) -> None:
    a = lms["Attempts"]
    window_start = NOW - dt.timedelta(days=14)
    assert a["started_at"].between(window_start, NOW).all()
    s = a.dropna(subset=["submitted_at"])
    assert (s["submitted_at"] > s["started_at"]).all()
    g = a.dropna(subset=["graded_at"])
    assert (g["graded_at"] > g["submitted_at"]).all()
    latest = a[["started_at", "submitted_at", "graded_at"]].max(axis=1)
    assert (a["updated_at"] >= latest).all()
    assert (a["updated_at"] - latest <= pd.Timedelta(seconds=5)).all()
    for col in ("started_at", "submitted_at", "graded_at", "updated_at"):
        assert (a[col].dropna() <= NOW).all(), col
    assert a["started_at"].is_monotonic_increasing  # ids in creation order


# --------------------------------------------------------------------------- content attempts


@pytest.mark.unit
def test_content_attempts_states_progress_and_times(lms: dict[str, pd.DataFrame]) -> None:
    c = lms["ContentAttempts"].merge(
        lms["Contents"][["id", "content_type", "duration_seconds"]].rename(columns={"id": "content_id"}),
        on="content_id",
    )
    assert set(c["status"]) == {"started", "in_progress", "completed"}
    assert c["progress_percent"].between(0, 100).all()
    done = c[c["status"] == "completed"]
    assert done["completed_at"].notna().all() and (done["progress_percent"] >= 97).all()
    assert (done["progress_percent"] == 100).mean() > 0.8
    assert c.loc[c["status"] != "completed", "completed_at"].isna().all()
    assert (c.loc[c["status"] == "in_progress", "progress_percent"] < 100).all()
    assert (c.loc[c["status"] == "started", "progress_percent"] <= 5).all()
    videos = c[c["content_type"] == "video"]
    assert (videos["progress_percent"] == 89.9).any() and (videos["progress_percent"] == 90.0).any()
    # time spent is plausible: never more than the wall time, media about their length when completed
    wall = (c["updated_at"] - c["started_at"]).dt.total_seconds()
    assert (c["time_spent_seconds"] >= 0).all() and (c["time_spent_seconds"] <= wall).all()
    media_done = done[done["content_type"].isin(["video", "audio"])]
    ratio = media_done["time_spent_seconds"] / media_done["duration_seconds"]
    assert ratio.between(0.9, 1.3).all()
    # timestamps ordered, updated_at the latest, never after now
    assert (done["completed_at"] > done["started_at"]).all()
    assert (done["updated_at"] >= done["completed_at"]).all()
    assert (c["updated_at"] >= c["started_at"]).all()
    for col in ("started_at", "completed_at", "updated_at"):
        assert (c[col].dropna() <= NOW).all(), col
    assert c["started_at"].between(NOW - dt.timedelta(days=14), NOW).all()


# --------------------------------------------------------------------------- schema, defaults, backends


@pytest.mark.unit
def test_schema_refresh_replaces_previous_rows_and_has_the_indexes(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "lms.sqlite3")
    generate_demo_lms(url, students=30, days=3, now=NOW)
    engine = db.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("""INSERT INTO "Courses" (id, title) VALUES (999, 'stale')"""))
    generate_demo_lms(engine, students=5, days=2, now=NOW)  # an Engine works too and is left open
    with engine.connect() as conn:
        assert conn.execute(sa.text('SELECT count(*) FROM "Courses" WHERE id = 999')).scalar_one() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM \"Users\" WHERE role = 'student'")).scalar_one() == 5
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("Attempts")}
        assert "attempts_updated_at" in indexes
    create_lms_schema(engine)
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) >= set(TABLES)
        assert conn.execute(sa.text('SELECT count(*) FROM "Attempts"')).scalar_one() == 0
        assert {i["name"] for i in sa.inspect(conn).get_indexes("ContentAttempts")} == {"content_attempts_updated_at"}
    engine.dispose()


@pytest.mark.unit
def test_default_now_is_the_current_minute_and_tiny_demos_show_every_state(tmp_path: Path) -> None:
    before = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    url = sqlite_url(tmp_path / "tiny.sqlite3")
    summary = generate_demo_lms(url, students=1, days=1, seed=3)
    after = dt.datetime.now(dt.UTC)
    lms = read_lms(url)
    assert (summary.students, summary.mentors) == (1, 2)
    latest = max(lms[t][c].max() for t, c in [("Attempts", "updated_at"), ("ContentAttempts", "updated_at")])
    assert before - dt.timedelta(minutes=30) <= latest <= after
    assert set(lms["Attempts"]["status"]) >= {"in_progress", "graded"}
    assert lms["MentorAssignments"]["ended_at"].isna().any()


def test_postgresql_gets_the_same_rows_as_sqlite(pg_url: str, lms: dict[str, pd.DataFrame]) -> None:
    summary = generate_demo_lms(pg_url, now=NOW)
    assert summary.attempts == len(lms["Attempts"])
    stored = read_lms(pg_url)
    for name in TABLES:
        pd.testing.assert_frame_equal(lms[name], stored[name], obj=name)
    engine = db.create_engine(pg_url)
    with engine.connect() as conn:
        types = dict(
            conn.execute(
                sa.text("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'Attempts'")
            ).all()
        )
        assert types["started_at"] == "timestamp with time zone"
        assert {i["name"] for i in sa.inspect(conn).get_indexes("Attempts")} == {"attempts_updated_at"}
    # a refresh on PostgreSQL replaces everything, in one transaction
    generate_demo_lms(engine, students=10, days=2, seed=1, now=NOW)
    with engine.connect() as conn:
        assert conn.execute(sa.text('SELECT count(*) FROM "Attempts"')).scalar_one() == 20
        assert conn.execute(sa.text('SELECT max(updated_at) FROM "ContentAttempts"')).scalar_one() <= NOW
    engine.dispose()


# --------------------------------------------------------------------------- never drop a real LMS


def count(url: str, table: str) -> int:
    engine = db.create_engine(url)
    with engine.connect() as conn:
        total = conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one()
    engine.dispose()
    return total


def test_refuses_an_lms_it_did_not_write_unless_forced(backend: Backend) -> None:
    """The reference tables of a real LMS (no demo marker) are never dropped without ``force``."""
    LMSBuilder(backend.lms_url).school().write()
    before = read_lms(backend.lms_url)
    with pytest.raises(NotADemoDatabase) as refused:
        generate_demo_lms(backend.lms_url, students=5, days=2, now=NOW)
    assert refused.value.tables == sorted(TABLES)
    with pytest.raises(NotADemoDatabase):
        create_lms_schema(db.create_engine(backend.lms_url))
    after = read_lms(backend.lms_url)
    for name in TABLES:
        pd.testing.assert_frame_equal(before[name], after[name], obj=name)

    summary = generate_demo_lms(backend.lms_url, students=5, days=2, now=NOW, force=True)
    assert count(backend.lms_url, "Users") == summary.students + summary.mentors + 1  # a staff member
    # Now it is a demo: refreshing needs no force.
    assert generate_demo_lms(backend.lms_url, students=3, days=1, now=NOW).students == 3
    assert count(backend.lms_url, DEMO_MARKER.name) == 1


def test_refuses_a_demo_database_that_also_holds_other_tables(backend: Backend) -> None:
    generate_demo_lms(backend.lms_url, students=5, days=2, now=NOW)  # an empty database is fine
    engine = db.create_engine(backend.lms_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE payroll (id INTEGER PRIMARY KEY, amount NUMERIC)"))
        conn.execute(sa.text("INSERT INTO payroll VALUES (1, 4200)"))
        if backend.name == "postgresql":  # a real LMS in a schema of its own counts too
            conn.execute(sa.text("CREATE SCHEMA lms; CREATE TABLE lms.exam_attempt (id INTEGER)"))
    expected = ["lms.exam_attempt", "payroll"] if backend.name == "postgresql" else ["payroll"]
    with pytest.raises(NotADemoDatabase) as refused:
        generate_demo_lms(engine, students=3, days=1, now=NOW)
    assert refused.value.tables == expected
    assert count(backend.lms_url, "Users") > 3

    generate_demo_lms(engine, students=3, days=1, now=NOW, force=True)  # replaces the demo, keeps the rest
    assert count(backend.lms_url, "payroll") == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM \"Users\" WHERE role = 'student'")).scalar_one() == 3
    engine.dispose()
