"""The REST API on SQLite and PostgreSQL: tokens, auth failures, events and their pages, the claim queue,
notifications, students at risk, bad input (422 naming the field) and a database that is down (503)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lms_activity_pipeline import db
from lms_activity_pipeline.cli import main
from lms_activity_pipeline.service.app import create_app
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse import tokens
from lms_activity_pipeline.warehouse.engine import open_warehouse
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.service.helpers import risk_row, service_settings
from lms_activity_pipeline_tests.test_api import T0, seed


@pytest.fixture
def client(backend: Backend, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(service_settings(backend.warehouse_url, backend.lms_url, tmp_path))) as c:
        yield c


def engine_of(client: TestClient) -> sa.Engine:
    return client.app.state.service.engine  # type: ignore[attr-defined]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_api_auth_events_pages_claims_and_notifications(client: TestClient) -> None:
    engine = engine_of(client)
    ids = seed(engine, 14)
    reader, writer = tokens.create_token(engine, "ro", "read"), tokens.create_token(engine, "rw", "write")

    # auth failures: none, garbage, revoked; read token on a write endpoint
    assert client.get("/api/v1/events").status_code == 401
    assert client.get("/api/v1/events", headers=auth("lmsat_nope_nope")).status_code == 401
    assert client.post("/api/v1/events/claim", json={"limit": 1}, headers=auth(reader)).status_code == 403
    gone = tokens.create_token(engine, "gone", "write")
    assert client.get("/api/v1/events", headers=auth(gone)).status_code == 200
    tokens.revoke_token(engine, "gone")
    assert client.get("/api/v1/events", headers=auth(gone)).status_code == 401

    # keyset pages cover every event once
    seen, after = [], None
    while True:
        params = {"limit": 5, **({"after": after} if after is not None else {})}
        page = client.get("/api/v1/events", params=params, headers=auth(reader)).json()
        seen += [e["event_id"] for e in page["events"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == ids
    # filters
    failed = client.get("/api/v1/events", params={"event_type": "exam_failed"}, headers=auth(reader)).json()
    assert {e["event_type"] for e in failed["events"]} == {"exam_failed"} and len(failed["events"]) == 2
    window = client.get(
        "/api/v1/events",
        params={"student_id": 1, "since": (T0 + dt.timedelta(minutes=3)).isoformat(), "until": "2024-05-03T12:10:00Z"},
        headers=auth(reader),
    ).json()["events"]
    assert [e["student_id"] for e in window] == [1, 1, 1] and window[0]["timestamp"].startswith("2024-05-03T12:03")

    history = client.get("/api/v1/students/2/history", params={"days": 3650}, headers=auth(reader)).json()
    assert len(history["events"]) == 5 and all(e["student_id"] == 2 for e in history["events"])

    # the claim queue: leases hold, marking removes them
    first = client.post("/api/v1/events/claim", json={"limit": 3}, headers=auth(writer)).json()["events"]
    assert [e["event_id"] for e in first] == ids[:3] and first[0]["ai_claimed_by"].startswith("api:rw/")
    second = client.post("/api/v1/events/claim", json={"limit": 3}, headers=auth(writer)).json()["events"]
    assert [e["event_id"] for e in second] == ids[3:6]
    done = client.post("/api/v1/events/processed", json={"event_ids": ids[:3]}, headers=auth(writer)).json()
    assert done == {"marked": 3}
    with engine.connect() as conn:
        flags = conn.execute(
            sa.select(wh.lms_activity_events.c.processed_for_ai).where(wh.lms_activity_events.c.event_id.in_(ids[:3]))
        ).scalars()
        assert all(flags)

    # notifications by status
    with engine.begin() as conn:
        conn.execute(
            wh.lms_event_log.insert(),
            [
                {
                    "event_id": ids[0],
                    "mentor_id": 9,
                    "status": "sent",
                    "notification_sent": True,
                    "error_message": None,
                },
                {
                    "event_id": ids[1],
                    "mentor_id": 9,
                    "status": "failed",
                    "notification_sent": False,
                    "error_message": "Zulip 502",
                },
            ],
        )
    failed_pairs = client.get("/api/v1/notifications", params={"status": "failed"}, headers=auth(reader)).json()
    assert [(n["event_id"], n["error_message"]) for n in failed_pairs["notifications"]] == [(ids[1], "Zulip 502")]


def test_bad_input_is_422_naming_the_field(client: TestClient) -> None:
    token = tokens.create_token(engine_of(client), "ro", "read")
    for params, field in [
        ({"event_type": "exam_exploded"}, "event_type"),
        ({"since": "yesterday-ish"}, "since"),
        ({"limit": 0}, "limit"),
        ({"limit": 100000}, "limit"),
    ]:
        answer = client.get("/api/v1/events", params=params, headers=auth(token))
        assert answer.status_code == 422, params
        assert answer.json()["detail"].startswith(f"{field}:"), answer.json()
    bad_status = client.get("/api/v1/notifications", params={"status": "lost"}, headers=auth(token))
    assert bad_status.status_code == 422 and bad_status.json()["detail"].startswith("status:")
    writer = tokens.create_token(engine_of(client), "rw", "write")
    claim = client.post("/api/v1/events/claim", json={"limit": 1, "event_types": ["nope"]}, headers=auth(writer))
    assert claim.status_code == 422 and "event_types" in claim.json()["detail"]


def test_students_at_risk_are_the_latest_days_flagged_rows_with_reasons(client: TestClient) -> None:
    engine = engine_of(client)
    token = tokens.create_token(engine, "ro", "read")
    nothing = client.get("/api/v1/students/at-risk", headers=auth(token))
    assert nothing.status_code == 200 and nothing.json() == {"as_of": None, "students": []}
    reason = [{"code": "inactive", "detail": "no activity for 9 days", "value": 9, "threshold": 7}]
    rows = [(1, "2024-05-03", "high", 0.9), (2, "2024-05-03", "low", 0.1), (3, "2024-05-02", "high", 1.0)]
    with db.write_transaction(engine) as conn:
        conn.execute(
            wh.student_risk.insert(),
            [
                risk_row(student, day, level, score, reason if level != "low" else [])
                for student, day, level, score in rows
            ],
        )
    found = client.get("/api/v1/students/at-risk", headers=auth(token)).json()
    assert found["as_of"].startswith("2024-05-03") and [s["student_id"] for s in found["students"]] == [1]
    assert found["students"][0]["reasons"] == reason
    low = client.get("/api/v1/students/at-risk?level=low&as_of=2024-05-03", headers=auth(token)).json()
    assert [s["student_id"] for s in low["students"]] == [1, 2]
    earlier = client.get("/api/v1/students/at-risk?as_of=2024-05-02&course_id=7", headers=auth(token)).json()
    assert [s["student_id"] for s in earlier["students"]] == [3]
    bad = client.get("/api/v1/students/at-risk?level=urgent", headers=auth(token))
    assert bad.status_code == 422 and "level" in bad.text


def test_health_needs_no_token_and_a_database_down_is_503_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wh.sqlite3'}"
    with TestClient(create_app(service_settings(url, f"sqlite:///{tmp_path / 'none.sqlite3'}", tmp_path))) as c:
        health = c.get("/api/v1/health")
        assert health.status_code == 200 and health.json()["database"] == "reachable"
    down = service_settings("postgresql://lms@127.0.0.1:1/warehouse", url, tmp_path)
    with TestClient(create_app(down), raise_server_exceptions=False) as c:
        for path in ("/api/v1/health", "/api/v1/events"):
            answer = c.get(path, headers=auth("lmsat_abc_def"))
            assert answer.status_code == 503, (path, answer.text)
            detail = answer.json()["detail"]
            assert "\n" not in detail and "Traceback" not in answer.text and "unavailable" in detail


def test_token_cli_prints_the_token_once_and_stores_only_a_salted_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'wh.sqlite3'}"
    monkeypatch.setenv("LMS_WAREHOUSE_URL", url)
    monkeypatch.setenv("LMS_HOME", str(tmp_path))
    assert main(["token", "create", "--name", "etl", "--scope", "write"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("lmsat_")
    assert main(["token", "create", "--name", "etl", "--scope", "read"]) == 2  # the name is taken
    assert "exists already" in capsys.readouterr().err
    assert main(["token", "list"]) == 0
    listed = capsys.readouterr().out
    assert "etl\twrite" in listed and token not in listed
    engine = open_warehouse(url, "lms_activity")
    with engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.execute(sa.select(wh.lms_service_tokens)) for v in row)
    assert token.split("_", 2)[2] not in stored  # the secret (token_urlsafe may itself hold "_")
    assert tokens.verify_token(engine, token) is not None
    assert tokens.verify_token(engine, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert main(["token", "revoke", "etl"]) == 0
    assert tokens.verify_token(engine, token) is None
    assert main(["token", "revoke", "etl"]) == 1
    assert main(["token", "create", "--name", "etl", "--scope", "read"]) == 0  # a revoked name can be reused
    assert tokens.verify_token(engine, capsys.readouterr().out.strip().splitlines()[-1]).scope == "read"  # type: ignore[union-attr]


def test_an_exhausted_connection_pool_is_503_with_retry_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Overload (every pooled connection busy past the pool's timeout) is a 503 the client can retry."""
    real = sa.create_engine
    small = {"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.1}
    monkeypatch.setattr(sa, "create_engine", lambda *args, **kw: real(*args, **{**kw, **small}))
    url = f"sqlite:///{tmp_path / 'wh.sqlite3'}"
    app = create_app(service_settings(url, url, tmp_path))
    with TestClient(app) as c:
        token = tokens.create_token(app.state.service.engine, "reader", "read")
        held = app.state.service.engine.connect()  # the pool's only connection, taken
        try:
            answer = c.get("/api/v1/events", headers=auth(token))
        finally:
            held.close()
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert answer.json()["detail"] == "warehouse busy: no database connection free, retry later"
        assert c.get("/api/v1/events", headers=auth(token)).status_code == 200  # free again
