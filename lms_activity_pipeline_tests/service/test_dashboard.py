"""The dashboard's pages through the app (FastAPI TestClient) on SQLite and PostgreSQL: links into the
Dagster UI, students at risk, the outbox trend, and the mentor-preference form (CSRF, scopes, bad input)."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lms_activity_pipeline import db
from lms_activity_pipeline.service.app import create_app
from lms_activity_pipeline.warehouse import poll_state, service_reads, tokens
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.service.helpers import risk_row, service_settings

UI = "http://dagster.example:3000/"
RUN_ID = "0f1e2d3c-4b5a-6978-8091-a2b3c4d5e6f7"
NOTIFY_RUN_ID = "11111111-2222-3333-4444-555555555555"


@pytest.fixture
def client(backend: Backend, tmp_path: Path) -> Iterator[TestClient]:
    settings = service_settings(backend.warehouse_url, backend.lms_url, tmp_path, LMS_DAGSTER_UI_URL=UI)
    with TestClient(create_app(settings)) as c:
        yield c


def engine_of(client: TestClient) -> sa.Engine:
    return client.app.state.service.engine  # type: ignore[attr-defined]


def signed_in(client: TestClient, scope: str = "write") -> str:
    token = tokens.create_token(engine_of(client), f"op-{scope}", scope)
    client.cookies.set("lms_token", token)
    return token


def hrefs(page: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'href="([^"]+)"', page)]


@pytest.mark.unit
def test_run_links_and_field_names_are_plain_functions() -> None:
    from lms_activity_pipeline.service.dashboard import _field_first, run_key_url, run_url

    assert run_url(UI, RUN_ID) == f"http://dagster.example:3000/runs/{RUN_ID}"
    assert run_url(UI, "dashboard-op-1a2b3c4d") is None and run_url(UI, None) is None
    assert (
        run_key_url("http://ui", "lms ingest/1") == "http://ui/runs?q%5B%5D=tag%3Adagster%2Frun_key%3Dlms%20ingest%2F1"
    )
    assert run_key_url("http://ui", None) is None
    assert _field_first("--frequency 'x' is not one of a, b") == "frequency 'x' is not one of a, b"
    assert _field_first("--send-hour 25 must be 0 to 23") == "send_hour 25 must be 0 to 23"
    assert _field_first("MENTOR 'nobody': no LMS user") == "mentor 'nobody': no LMS user"


def outbox(engine: sa.Engine, rows: list[dict[str, object]]) -> None:
    with db.write_transaction(engine) as conn:
        for row in rows:
            conn.execute(wh.lms_event_log.insert().values(**row))


def test_runs_link_into_the_dagster_ui(client: TestClient) -> None:
    engine = engine_of(client)
    signed_in(client)
    now = dt.datetime.now(dt.UTC)
    outbox(
        engine,
        [
            {"event_id": 1, "mentor_id": 5, "status": "failed", "error_message": "HTTP 500", "attempts": 3,
             "processed_at": now - dt.timedelta(minutes=5), "last_run_id": RUN_ID},
            {"event_id": 2, "mentor_id": 5, "status": "failed", "error_message": "HTTP 502", "attempts": 1,
             "processed_at": now - dt.timedelta(minutes=4), "last_run_id": "dashboard-op-1a2b3c4d"},
            {"event_id": 3, "mentor_id": 5, "status": "sent", "attempts": 1, "processed_at": now,
             "last_run_id": NOTIFY_RUN_ID},
        ],
    )  # fmt: skip
    poll_state.save_state(engine, poll_state.read_state(engine), "c1", "requested", "lms-ingest-42", now)
    page = client.get("/").text
    links = hrefs(page)
    ui = UI.rstrip("/")
    assert f"{ui}/runs/{RUN_ID}" in links  # the failed pair's run
    assert f"{ui}/runs/{NOTIFY_RUN_ID}" in links  # the last notify run
    assert f"{ui}/runs?q%5B%5D=tag%3Adagster%2Frun_key%3Dlms-ingest-42" in links  # the runs of the last run key
    assert f"{ui}/runs" in links
    assert not any("dashboard-op" in h for h in links)  # a dashboard retry is no Dagster run: no link
    assert "dashboard-op-1a2b3c4d" in page


def test_the_outbox_trend_counts_each_day_by_processed_at(client: TestClient) -> None:
    engine = engine_of(client)
    signed_in(client)
    today = dt.datetime.now(dt.UTC).date()
    noon = dt.datetime.combine(today, dt.time(12), tzinfo=dt.UTC)
    rows: list[dict[str, object]] = []
    plan = {0: ("sent", 3), 1: ("failed", 2), 2: ("skipped", 1), 13: ("sent", 4), 14: ("sent", 9)}
    for back, (status, n) in plan.items():
        for i in range(n):
            rows.append({"event_id": 100 * back + i, "mentor_id": 5, "status": status,
                         "processed_at": noon - dt.timedelta(days=back)})  # fmt: skip
    rows.append({"event_id": 999, "mentor_id": 5, "status": "pending"})
    outbox(engine, rows)

    trend = service_reads.outbox_trend(engine, today)
    assert len(trend) == 14 and trend[0]["day"] == today - dt.timedelta(days=13) and trend[-1]["day"] == today
    by_day = {r["day"]: (r["sent"], r["failed"], r["skipped"]) for r in trend}
    assert by_day[today] == (3, 0, 0)
    assert by_day[today - dt.timedelta(days=1)] == (0, 2, 0)
    assert by_day[today - dt.timedelta(days=2)] == (0, 0, 1)
    assert by_day[today - dt.timedelta(days=13)] == (4, 0, 0)  # 14 days back falls outside
    assert sum(s + f + k for s, f, k in by_day.values()) == 3 + 2 + 1 + 4

    page = client.get("/").text
    for day, (sent, failed, skipped) in by_day.items():
        row = re.search(rf'<tr id="trend-{day.isoformat()}">(.*?)</tr>', page, re.S)
        assert row is not None, day
        cells = re.findall(r'<td class="n">(\d+)</td>', row.group(1))
        assert cells == [str(sent), str(failed), str(skipped)], day


def test_students_at_risk_of_the_latest_day_with_reasons_in_plain_words(client: TestClient) -> None:
    engine = engine_of(client)
    signed_in(client, "read")
    assert 'id="no-risk"' in client.get("/").text
    inactive = {"code": "inactive", "detail": "no activity for 9 days", "value": 9, "threshold": 7}
    failed = {"code": "unpassed_exam", "detail": "exam 'Final' not passed after 2 tries", "value": 2, "threshold": 1}
    rows = [
        risk_row(1, "2024-05-03", "high", 0.9, [inactive, failed]),
        risk_row(2, "2024-05-03", "medium", 0.5, [inactive]),
        risk_row(3, "2024-05-03", "low", 0.1, []),
        risk_row(4, "2024-05-02", "high", 1.0, [inactive]),
    ]
    with db.write_transaction(engine) as conn:
        conn.execute(wh.student_risk.insert(), rows)
    page = client.get("/").text
    shown = re.findall(r'<tr id="risk-(\d+)-7">(.*?)</tr>', page, re.S)
    assert [int(s) for s, _ in shown] == [1, 2]  # the latest day, high and medium, highest score first
    first = html.unescape(shown[0][1])
    assert "high" in first and "no activity for 9 days; exam 'Final' not passed after 2 tries" in first
    assert "student1" in first and "Algebra I" in first
    assert "2024-05-03" in page and "inactive" not in page


def test_the_preference_form_uses_prefs_set_and_needs_csrf_and_a_write_token(
    backend: Backend, client: TestClient
) -> None:
    from lms_activity_pipeline.service.auth import csrf_token
    from lms_activity_pipeline.warehouse.preferences import PreferenceStore
    from lms_activity_pipeline_tests.support.notify_helpers import recent_school

    recent_school(backend.lms_url)
    engine = engine_of(client)
    store = PreferenceStore(engine)
    outbox(engine, [{"event_id": 1, "mentor_id": 10, "status": "sent"}])
    form = {"mentor": "10", "frequency": "daily", "course": ""}

    assert client.post("/actions/set-preference", data={**form, "csrf": "x"}).status_code == 401  # no session
    reader = signed_in(client, "read")
    assert client.post("/actions/set-preference", data={**form, "csrf": csrf_token(reader)}).status_code == 403
    writer = signed_in(client, "write")
    assert client.post("/actions/set-preference", data={**form, "csrf": "forged"}).status_code == 403
    assert client.post("/actions/set-preference", data=form).status_code == 422  # csrf missing
    assert store.all() == []

    csrf = csrf_token(writer)
    done = client.post("/actions/set-preference", data={**form, "csrf": csrf})
    assert done.status_code == 200 and "mentor 10 (" in done.text and "all students: daily" in done.text
    by_course = {"mentor": "10", "frequency": "weekly", "course": "100", "csrf": csrf}
    assert client.post("/actions/set-preference", data=by_course).status_code == 200
    stored = {(p.scope_kind, p.scope_id): p.frequency for p in store.all([10])}
    assert stored == {("all", 0): "daily", ("course", 100): "weekly"}
    cell = re.search(r'<td id="prefs-10">(.*?)</td>', client.get("/").text, re.S)
    assert cell is not None and cell.group(1) == "all students: daily, at 18:00; course 100: weekly, at mon 18:00"

    for bad, field in (
        ({"frequency": "sometimes"}, "frequency 'sometimes' is not one of"),
        ({"course": "algebra"}, "course must be a whole number"),
        ({"mentor": "nobody"}, "mentor 'nobody': no LMS user"),
        ({"mentor": " "}, "mentor: give the LMS user id"),
    ):
        answer = client.post("/actions/set-preference", data={**form, "csrf": csrf, **bad})
        error = re.search(r'<p class="error" id="prefs-error">(.*?)</p>', answer.text)
        assert answer.status_code == 422 and error is not None, bad
        assert html.unescape(error.group(1)).startswith(field), (bad, error.group(1))
    assert {(p.scope_kind, p.scope_id): p.frequency for p in store.all()} == stored  # nothing changed
