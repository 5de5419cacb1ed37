"""The fake Zulip server answers the real ``zulip.Client`` the way Zulip does."""

from __future__ import annotations

import os
import time

import pytest
import requests
import zulip

from lms_activity_pipeline_tests.support.fake_zulip import MAX_MESSAGE_LENGTH, FakeZulip


def make_client(server: FakeZulip, **kwargs: object) -> zulip.Client:
    options = {"site": server.url, "email": server.email, "api_key": server.api_key, "retry_on_errors": False}
    options.update(kwargs)
    return zulip.Client(**options)


def test_fixture_isolates_the_environment(fake_zulip: FakeZulip) -> None:
    assert not [name for name in os.environ if name.startswith("ZULIP_")]
    assert not os.path.exists(os.path.expanduser("~/.zuliprc"))
    assert fake_zulip.url.startswith("http://127.0.0.1:")


def test_client_constructor_reads_server_settings(fake_zulip: FakeZulip) -> None:
    client = make_client(fake_zulip)
    assert client.zulip_version == "9.0"
    assert client.feature_level == 300
    assert [(r.method, r.endpoint) for r in fake_zulip.requests] == [("GET", "server_settings")]


def test_send_message_returns_id_and_stores(fake_zulip: FakeZulip) -> None:
    mentor = fake_zulip.add_user("mentor@example.com", "Mia Mentor")
    client = make_client(fake_zulip)

    result = client.send_message({"type": "direct", "to": [mentor.user_id], "content": "hello **Mia**"})

    assert result["result"] == "success"
    assert isinstance(result["id"], int)
    [message] = fake_zulip.messages
    assert (message.id, message.recipient_ids, message.content) == (result["id"], [mentor.user_id], "hello **Mia**")
    assert message.sender_email == fake_zulip.email
    assert fake_zulip.messages_to("mentor@example.com") == [message]
    assert fake_zulip.requests_to("messages", "POST")[0].status == 200


def test_send_by_email_and_private_type(fake_zulip: FakeZulip) -> None:
    mentor = fake_zulip.add_user("mentor@example.com")
    result = make_client(fake_zulip).send_message({"type": "private", "to": ["Mentor@Example.com"], "content": "x"})
    assert result["result"] == "success"
    assert fake_zulip.messages[0].recipient_ids == [mentor.user_id]


def test_direct_type_rejected_below_feature_level_174(isolated_zulip_env: object) -> None:
    with FakeZulip(feature_level=150) as server:
        mentor = server.add_user("mentor@example.com")
        client = make_client(server)
        assert client.feature_level == 150
        result = client.send_message({"type": "direct", "to": [mentor.user_id], "content": "x"})
        assert (result["result"], result["code"], result["msg"]) == ("error", "BAD_REQUEST", "Invalid message type")
        assert client.send_message({"type": "private", "to": [mentor.user_id], "content": "x"})["result"] == "success"


def test_unknown_recipients(fake_zulip: FakeZulip) -> None:
    client = make_client(fake_zulip)
    assert client.send_message({"type": "direct", "to": [999], "content": "x"})["msg"] == "Invalid user ID 999"
    assert (
        client.send_message({"type": "direct", "to": ["no@x.org"], "content": "x"})["msg"] == "Invalid email 'no@x.org'"
    )
    assert fake_zulip.messages == []


def test_long_content_is_truncated_like_zulip(fake_zulip: FakeZulip) -> None:
    mentor = fake_zulip.add_user("mentor@example.com")
    make_client(fake_zulip).send_message({"type": "direct", "to": [mentor.user_id], "content": "a" * 12_000})
    content = fake_zulip.messages[0].content
    assert len(content) == MAX_MESSAGE_LENGTH
    assert content.endswith("\n[message truncated]")


def test_user_lookup_by_email(fake_zulip: FakeZulip) -> None:
    fake_zulip.add_user("mentor+lms@example.com", "Mia Mentor", user_id=42)
    fake_zulip.add_user("gone@example.com", "Gone", is_active=False)
    client = make_client(fake_zulip)

    found = client.call_endpoint(url="users/mentor%2Blms%40example.com", method="GET")
    assert found["result"] == "success"
    assert {
        k: found["user"][k] for k in ("user_id", "email", "delivery_email", "full_name", "is_active", "is_bot")
    } == {
        "user_id": 42,
        "email": "mentor+lms@example.com",
        "delivery_email": "mentor+lms@example.com",
        "full_name": "Mia Mentor",
        "is_active": True,
        "is_bot": False,
    }
    assert client.call_endpoint(url="users/gone%40example.com", method="GET")["user"]["is_active"] is False
    missing = client.call_endpoint(url="users/nobody%40example.com", method="GET")
    assert (missing["result"], missing["code"], missing["msg"]) == ("error", "BAD_REQUEST", "No such user")
    assert fake_zulip.requests[-1].path == "/api/v1/users/nobody%40example.com"


def test_rate_limit_reply(fake_zulip: FakeZulip) -> None:
    mentor = fake_zulip.add_user("mentor@example.com")
    client = make_client(fake_zulip)
    fake_zulip.fail_next("messages", 429, retry_after=2.5)

    result = client.send_message({"type": "direct", "to": [mentor.user_id], "content": "x"})

    assert result == {
        "result": "error",
        "msg": "API usage exceeded rate limit",
        "code": "RATE_LIMIT_HIT",
        "retry-after": 2.5,
    }
    assert fake_zulip.messages == []
    # The header, as a raw HTTP client sees it.
    raw = requests.post(f"{fake_zulip.url}/api/v1/messages", auth=(fake_zulip.email, fake_zulip.api_key), data={})
    assert raw.status_code == 400  # the fault was used up: back to normal validation
    fake_zulip.fail_next("/api/v1/messages", 429, retry_after=7)
    raw = requests.post(f"{fake_zulip.url}/api/v1/messages", auth=(fake_zulip.email, fake_zulip.api_key), data={})
    assert (raw.status_code, raw.headers["Retry-After"], raw.json()["retry-after"]) == (429, "7", 7)
    # The next request is answered normally.
    assert client.send_message({"type": "direct", "to": [mentor.user_id], "content": "x"})["result"] == "success"


def test_server_errors(fake_zulip: FakeZulip) -> None:
    mentor = fake_zulip.add_user("mentor@example.com")
    client = make_client(fake_zulip)
    fake_zulip.fail_next("messages", 500)
    fake_zulip.fail_next("messages", 502)
    request = {"type": "direct", "to": [mentor.user_id], "content": "x"}

    json_error = client.send_message(request)
    proxy_error = client.send_message(request)

    assert (json_error["result"], json_error["msg"]) == ("error", "Internal server error")
    assert proxy_error == {"msg": "Unexpected error from the server", "result": "http-error", "status_code": 502}
    assert fake_zulip.messages == []
    assert [r.status for r in fake_zulip.requests_to("messages")] == [500, 502]


def test_error_after_storing_models_the_duplicate_hazard(fake_zulip: FakeZulip) -> None:
    mentor = fake_zulip.add_user("mentor@example.com")
    client = make_client(fake_zulip)
    fake_zulip.fail_next("messages", 502, store_anyway=True)

    result = client.send_message({"type": "direct", "to": [mentor.user_id], "content": "x"})

    assert result["result"] == "http-error"
    assert len(fake_zulip.messages) == 1  # stored although the sender saw a failure


def test_default_client_retries_5xx_and_duplicates(fake_zulip: FakeZulip, monkeypatch: pytest.MonkeyPatch) -> None:
    """Why the notifier must use ``retry_on_errors=False``: the client's own retry re-sends."""
    monkeypatch.setattr(zulip.time, "sleep", lambda seconds: None)
    mentor = fake_zulip.add_user("mentor@example.com")
    client = make_client(fake_zulip, retry_on_errors=True)
    fake_zulip.fail_next("messages", 502, store_anyway=True)

    assert client.send_message({"type": "direct", "to": [mentor.user_id], "content": "x"})["result"] == "success"
    assert len(fake_zulip.messages) == 2


def test_slow_reply_times_out_but_is_processed(fake_zulip: FakeZulip) -> None:
    mentor = fake_zulip.add_user("mentor@example.com")
    client = make_client(fake_zulip)
    fake_zulip.fail_next("messages", 200, delay=1.0)
    request = {"type": "direct", "to": [mentor.user_id], "content": "x"}

    with pytest.raises(requests.exceptions.Timeout):
        client.call_endpoint(url="messages", request=request, timeout=0.2)
    deadline = time.monotonic() + 5
    while not fake_zulip.messages and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(fake_zulip.messages) == 1  # the outcome the sender could not see


def test_deactivated_recipient(fake_zulip: FakeZulip) -> None:
    mentor = fake_zulip.add_user("mentor@example.com")
    fake_zulip.deactivate_user("mentor@example.com")

    result = make_client(fake_zulip).send_message({"type": "direct", "to": [mentor.user_id], "content": "x"})

    assert (result["result"], result["code"], result["msg"]) == (
        "error",
        "BAD_REQUEST",
        "'mentor@example.com' is no longer using Zulip.",
    )
    assert fake_zulip.messages == []


def test_bad_api_key(fake_zulip: FakeZulip) -> None:
    client = make_client(fake_zulip, api_key="wrong-key")  # server_settings needs no auth, like Zulip

    result = client.send_message({"type": "direct", "to": [1], "content": "x"})

    assert (result["result"], result["code"]) == ("error", "INVALID_API_KEY")
    assert fake_zulip.requests_to("messages")[0].status == 401
    assert fake_zulip.messages == []
    unauthenticated = requests.get(f"{fake_zulip.url}/api/v1/users/me")
    assert (unauthenticated.status_code, unauthenticated.json()["code"]) == (401, "UNAUTHORIZED")


def test_connection_refused(fake_zulip: FakeZulip) -> None:
    with pytest.raises(zulip.UnrecoverableNetworkError):
        make_client(fake_zulip, site=FakeZulip.refused_url())

    client = make_client(fake_zulip)
    fake_zulip.stop()
    with pytest.raises(requests.exceptions.ConnectionError):
        client.send_message({"type": "direct", "to": [1], "content": "x"})


def test_every_authenticated_reply_carries_rate_limit_headers_and_the_limit_is_enforced(
    isolated_zulip_env: object,
) -> None:
    with FakeZulip(rate_limit=(60, 3)) as server:
        mentor = server.add_user("mentor@example.com")
        auth = (server.email, server.api_key)
        url = f"{server.url}/api/v1"
        before = time.time()
        first = requests.get(f"{url}/users/me", auth=auth)
        refused = requests.post(f"{url}/messages", auth=auth, data={"type": "direct", "to": "[999]", "content": "x"})
        sent = requests.post(
            f"{url}/messages", auth=auth, data={"type": "direct", "to": f"[{mentor.user_id}]", "content": "x"}
        )
        limited = requests.get(f"{url}/users/me", auth=auth)

        assert [r.headers["X-RateLimit-Remaining"] for r in (first, refused, sent)] == ["2", "1", "0"]
        assert {r.headers["X-RateLimit-Limit"] for r in (first, refused, sent, limited)} == {"3"}
        assert before + 59 <= int(sent.headers["X-RateLimit-Reset"]) <= time.time() + 60  # whole epoch seconds
        assert refused.status_code == 400  # an error reply still counts, as on Zulip
        body = limited.json()
        assert (limited.status_code, body["code"], limited.headers["X-RateLimit-Remaining"]) == (
            429,
            "RATE_LIMIT_HIT",
            "0",
        )
        assert 0 < body["retry-after"] <= 60 and float(limited.headers["Retry-After"]) == body["retry-after"]
        assert "X-RateLimit-Limit" not in requests.get(f"{url}/server_settings").headers  # unauthenticated
        assert len(server.messages) == 1


def test_the_rate_limit_window_slides(isolated_zulip_env: object) -> None:
    with FakeZulip(rate_limit=(0.5, 2)) as server:
        client = make_client(server)
        assert [client.get_profile()["result"] for _ in range(3)] == ["success", "success", "error"]
        time.sleep(0.6)  # the window has moved past the first requests
        assert client.get_profile()["result"] == "success"


@pytest.mark.parametrize("status", [200, 408, 403, 502])
def test_a_proxy_answers_html_with_any_status_optionally_after_zulip_stored_the_message(
    fake_zulip: FakeZulip, status: int
) -> None:
    mentor = fake_zulip.add_user("mentor@example.com")
    client = make_client(fake_zulip)
    fake_zulip.fail_next("messages", status, html=True, store_anyway=True, method="POST")
    fake_zulip.fail_next("messages", status, html=True, method="POST")
    request = {"type": "direct", "to": [mentor.user_id], "content": "x"}

    stored = client.send_message(request)
    lost = client.send_message(request)

    # The client turns a body that is not JSON into this, whatever the status.
    assert stored == lost == {"msg": "Unexpected error from the server", "result": "http-error", "status_code": status}
    assert len(fake_zulip.messages) == 1
    raw = requests.post(f"{fake_zulip.url}/api/v1/messages", auth=(fake_zulip.email, fake_zulip.api_key), data={})
    assert raw.status_code == 400  # faults used up
    fake_zulip.fail_next("users", status, html=True)
    page = requests.get(f"{fake_zulip.url}/api/v1/users/me", auth=(fake_zulip.email, fake_zulip.api_key))
    assert page.status_code == status and page.headers["Content-Type"] == "text/html"
    assert page.text.startswith("<html>") and "X-RateLimit-Remaining" not in page.headers
