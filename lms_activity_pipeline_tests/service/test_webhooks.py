"""``POST /webhooks/lms``: Standard Webhooks signatures (rotation), skewed timestamps, replay, bad bodies."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from lms_activity_pipeline.service.app import create_app
from lms_activity_pipeline.warehouse import schema as wh
from lms_activity_pipeline.warehouse import webhook_inbox
from lms_activity_pipeline_tests.conftest import Backend
from lms_activity_pipeline_tests.service.helpers import NEW_SECRET, SECRET, service_settings, signed

BODY = {"type": "attempt.changed", "data": {"id": 42}}


@pytest.fixture
def client(backend: Backend, tmp_path: Path) -> Iterator[TestClient]:
    settings = service_settings(
        backend.warehouse_url, backend.lms_url, tmp_path, LMS_WEBHOOK_SECRET=f"{NEW_SECRET},{SECRET}"
    )
    with TestClient(create_app(settings)) as c:
        yield c


def inbox(client: TestClient) -> list[tuple[str, str, int]]:
    engine = client.app.state.service.engine  # type: ignore[attr-defined]
    t = wh.lms_webhook_inbox
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(t.c.webhook_id, t.c.source, t.c.row_id).order_by(t.c.row_id))]


def test_signed_webhooks_are_recorded_once_and_forgeries_refused(client: TestClient) -> None:
    body, headers = signed(BODY, webhook_id="msg_1")
    first = client.post("/webhooks/lms", content=body, headers=headers)
    assert first.status_code == 200 and first.json()["recorded"] is True
    replay = client.post("/webhooks/lms", content=body, headers=headers)
    assert replay.status_code == 200 and replay.json()["recorded"] is False
    # rotation: the new secret signs too
    body2, headers2 = signed({"type": "content_attempt.changed", "data": {"id": 43}}, secret=NEW_SECRET)
    assert client.post("/webhooks/lms", content=body2, headers=headers2).status_code == 200
    assert inbox(client) == [("msg_1", "attempts", 42), (headers2["webhook-id"], "content_attempts", 43)]

    refused = []
    # a body changed after signing, a wrong secret, a malformed signature, no headers
    _, good = signed(BODY)
    refused.append(
        client.post("/webhooks/lms", content=b'{"type": "attempt.changed", "data": {"id": 7}}', headers=good)
    )
    _, other = signed(BODY, secret="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY")
    refused.append(client.post("/webhooks/lms", content=signed(BODY)[0], headers={**other}))
    refused.append(client.post("/webhooks/lms", content=body, headers={**good, "webhook-signature": "garbage"}))
    refused.append(client.post("/webhooks/lms", content=body, headers={"content-type": "application/json"}))
    # timestamps more than 5 minutes off, either way
    for skew in (dt.timedelta(minutes=6), -dt.timedelta(minutes=6)):
        b, h = signed(BODY, at=dt.datetime.now(dt.UTC) + skew)
        refused.append(client.post("/webhooks/lms", content=b, headers=h))
    assert [r.status_code for r in refused] == [401] * 6
    assert "too old" in refused[-1].json()["detail"] or "too new" in refused[-1].json()["detail"]
    assert len(inbox(client)) == 2

    # within tolerance: 4 minutes old is fine
    b, h = signed({"type": "attempt.changed", "data": {"id": 44}}, at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4))
    assert client.post("/webhooks/lms", content=b, headers=h).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        ({"type": "user.created", "data": {"id": 1}}, "type"),
        ({"type": "attempt.changed", "data": {"id": "x"}}, "data.id"),
        ({"type": "attempt.changed"}, "data.id"),
    ],
)
def test_a_signed_but_bad_body_is_422_naming_the_field(tmp_path: Path, body: object, field: str) -> None:
    url = f"sqlite:///{tmp_path / 'wh.sqlite3'}"
    with TestClient(create_app(service_settings(url, url, tmp_path))) as c:
        data, headers = signed(body)  # type: ignore[arg-type]
        answer = c.post("/webhooks/lms", content=data, headers=headers)
        assert answer.status_code == 422 and answer.json()["detail"].startswith(f"{field}:")


def test_without_a_secret_the_receiver_answers_503(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wh.sqlite3'}"
    settings = service_settings(url, url, tmp_path)
    settings = type(settings)(**{**settings.__dict__, "webhook_secret": None})
    with TestClient(create_app(settings)) as c:
        data, headers = signed(BODY)
        answer = c.post("/webhooks/lms", content=data, headers=headers)
        assert answer.status_code == 503 and "LMS_WEBHOOK_SECRET" in answer.json()["detail"]


@pytest.mark.unit
def test_a_bad_webhook_secret_is_one_line_naming_the_variable_never_the_value() -> None:
    from lms_activity_pipeline.errors import ConfigError
    from lms_activity_pipeline.settings import load_settings

    for value in ("s3cr3t-value", f"{SECRET},whsec_x"):
        with pytest.raises(ConfigError) as caught:
            load_settings({"LMS_WEBHOOK_SECRET": value})
        assert str(caught.value).startswith("LMS_WEBHOOK_SECRET:") and "s3cr3t" not in str(caught.value)
    assert load_settings({"LMS_WEBHOOK_SECRET": f" {SECRET} , {NEW_SECRET} "}).webhook_secret == (SECRET, NEW_SECRET)


def test_concurrent_webhooks_share_transactions_and_each_answers_for_itself(backend: Backend, tmp_path: Path) -> None:
    """300 webhooks at once (50 of them repeats of another, some in flight together): every one is answered
    200 after its row is committed, exactly one request per webhook-id is told ``recorded``, and the rows are
    written in far fewer transactions than requests (group commit)."""
    app = create_app(service_settings(backend.warehouse_url, backend.lms_url, tmp_path))
    engine = app.state.service.engine
    ids = [f"msg_{i}" for i in range(250)] + [f"msg_{i}" for i in range(0, 250, 5)]
    requests = [signed({"type": "attempt.changed", "data": {"id": i}}, webhook_id=w) for i, w in enumerate(ids)]
    inserts: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO") and "lms_webhook_inbox" in statement:
            inserts.append(statement)

    async def send_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return await asyncio.gather(*(client.post("/webhooks/lms", content=b, headers=h) for b, h in requests))

    app.state.service.store.migrate()
    inserts.clear()
    answers = asyncio.run(send_all())
    assert [a.status_code for a in answers] == [200] * 300
    told = [w for w, a in zip(ids, answers, strict=True) if a.json()["recorded"]]
    assert sorted(told) == sorted(set(ids))  # one "recorded" per webhook-id, whichever request came first
    t = wh.lms_webhook_inbox
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.select(t.c.webhook_id, t.c.row_id)).all())
    assert set(stored) == set(ids) and stored["msg_5"] == 5  # the first request's row, not its repeat's
    assert 1 <= len(inserts) < 100, len(inserts)


def test_webhooks_are_refused_with_503_while_the_database_is_down_and_recorded_after(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails answers every webhook of its batch 503 (the LMS retries); the next batch is written."""
    with TestClient(create_app(service_settings(backend.warehouse_url, backend.lms_url, tmp_path))) as client:
        real = webhook_inbox.record_many

        def down(engine: object, received: object) -> set[str]:
            raise sa.exc.OperationalError("INSERT", {}, Exception("connection refused"))

        monkeypatch.setattr(webhook_inbox, "record_many", down)
        body, headers = signed(BODY, webhook_id="msg_down")
        refused = client.post("/webhooks/lms", content=body, headers=headers)
        assert refused.status_code == 503 and "connection refused" in refused.json()["detail"]
        assert inbox(client) == []
        monkeypatch.setattr(webhook_inbox, "record_many", real)
        retried = client.post("/webhooks/lms", content=body, headers=headers)
        assert retried.status_code == 200 and retried.json()["recorded"] is True
        assert inbox(client) == [("msg_down", "attempts", 42)]
