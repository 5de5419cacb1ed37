"""A loopback HTTP server that answers the real ``zulip.Client`` like a Zulip server.

It implements what the notifier uses (``server_settings``, ``users/{email}``,
``users/{id}``, ``users/me``, ``POST messages``, ``GET messages`` narrowed to
a direct-message conversation) with Zulip's status codes,
error codes and messages, stores the messages it accepts, records every
request, and plays scripted faults (429, 5xx, slow replies, stored-then-failed
sends, a proxy or WAF answering with an HTML page of any status). Like Zulip it
rate-limits each user's authenticated requests (a sliding window, default 200
per 60 s) and sends ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` on every
such reply. Stdlib only; see ``conftest_zulip.py`` for the ``fake_zulip`` fixture.

    with FakeZulip() as server:
        server.add_user("mentor@example.com", "Mentor")
        client = server.client()
        client.send_message({"type": "direct", "to": [server.user_id("mentor@example.com")], "content": "hi"})
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

API_PREFIX = "/api/v1/"
#: Zulip's ``settings.MAX_MESSAGE_LENGTH`` and the suffix it appends when truncating.
MAX_MESSAGE_LENGTH = 10_000
TRUNCATION_SUFFIX = "\n[message truncated]"
#: First feature level that accepts ``type=direct`` (Zulip 7.0).
DIRECT_TYPE_FEATURE_LEVEL = 174
#: First feature level with the ``dm`` narrow operator (``pm-with`` before).
DM_NARROW_FEATURE_LEVEL = 177
#: Zulip's default ``api_by_user`` rule: 200 requests per 60 seconds (window seconds, requests).
ZULIP_RATE_LIMIT = (60.0, 200)


@dataclass
class FakeUser:
    user_id: int
    email: str
    full_name: str
    is_active: bool = True
    is_bot: bool = False
    api_key: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "email": self.email,
            "delivery_email": self.email,
            "full_name": self.full_name,
            "is_active": self.is_active,
            "is_bot": self.is_bot,
            "role": 400,
            "timezone": "",
            "date_joined": "2024-01-01T00:00:00+00:00",
        }


@dataclass
class StoredMessage:
    id: int
    type: str
    recipient_ids: list[int]
    content: str
    sender_email: str
    timestamp: float


@dataclass
class RecordedRequest:
    method: str
    path: str
    endpoint: str
    params: dict[str, str]
    sender_email: str | None
    time: float
    status: int = 0


@dataclass
class Fault:
    """A scripted reply: ``status`` (200 = answer normally, unless ``html`` or ``body``) after ``delay`` seconds."""

    status: int
    retry_after: float | None = None
    delay: float | None = None
    store_anyway: bool = False
    body: Any = None
    html: bool = False


@dataclass
class _Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """An error reply in Zulip's shape."""

    def __init__(self, status: int, code: str, msg: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(msg)
        self.reply = _Reply(status, {"result": "error", "msg": msg, "code": code, **extra}, dict(headers or {}))


class SlidingWindowLimiter:
    """Zulip's Redis rate limiter for one rule: at most ``limit`` requests in any ``window`` seconds.

    A refused request is not counted. ``X-RateLimit-Reset`` is when the newest
    counted request leaves the window (so a full burst is possible again).
    """

    def __init__(self, window: float, limit: int) -> None:
        self.window, self.limit = window, limit
        self._calls: dict[int, deque[float]] = {}

    def hit(self, user_id: int, now: float) -> dict[str, str]:
        """Count a request; its rate-limit headers. Raises the 429 :class:`ApiError` when over the limit."""
        calls = self._calls.setdefault(user_id, deque())
        while calls and calls[0] <= now - self.window:
            calls.popleft()
        if len(calls) >= self.limit:
            free_in = calls[0] + self.window - now
            headers = self._headers(0, now + free_in)
            headers["Retry-After"] = str(free_in)
            raise ApiError(429, "RATE_LIMIT_HIT", "API usage exceeded rate limit", headers, **{"retry-after": free_in})
        calls.append(now)
        return self._headers(self.limit - len(calls), calls[-1] + self.window)

    def _headers(self, remaining: int, reset: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(reset)),  # Zulip sends whole epoch seconds
        }


def endpoint_of(path: str) -> str:
    """The fault key of a request path: ``/api/v1/users/a%40b`` -> ``users``."""
    path = urllib.parse.urlsplit(path).path
    if path.startswith(API_PREFIX):
        path = path[len(API_PREFIX) :]
    return path.strip("/").split("/", 1)[0]


# --- channel messages (issue 15: operational alerts) ------------------------------------------------
# Zulip's ``POST /messages`` with ``type`` ``stream`` (or ``channel``), ``to`` the channel's name (or its
# id, or a JSON list holding one of them) and ``topic``; an unknown channel is 400 ``STREAM_DOES_NOT_EXIST``.
# The fake knows the channels registered with ``add_channel`` and lists what was posted with
# ``channel_messages``. Faults scripted for ``POST messages`` apply to them as to DMs.

# --- students at risk: emoji reactions, as Zulip's API has them ----------------------------------
# ``POST /messages/{id}/reactions`` and ``DELETE /messages/{id}/reactions`` (``emoji_name``, optional
# ``emoji_code`` / ``reaction_type``) by a participant of the message, and ``GET /messages/{id}``, whose
# ``message`` carries ``reactions``: ``[{"emoji_name", "emoji_code", "reaction_type", "user_id", "user"}]``.

#: Zulip's ``MAX_TOPIC_NAME_LENGTH``: longer topics are truncated with "…".
MAX_TOPIC_NAME_LENGTH = 60


@dataclass
class ChannelMessage:
    id: int
    channel: str
    topic: str
    content: str
    sender_email: str
    timestamp: float


#: The few unicode emoji names the fake knows, with Zulip's codes (``thumbs_up`` is also ``+1``).
FAKE_EMOJI = {"+1": "1f44d", "thumbs_up": "1f44d", "-1": "1f44e", "thumbs_down": "1f44e", "octopus": "1f419"}


class FakeZulip:
    """A threaded fake Zulip server on ``127.0.0.1`` (ephemeral port unless given).

    The sending bot (``email``/``api_key``) is registered as user 1. Register
    recipients with :meth:`add_user`; inspect :attr:`messages` and
    :attr:`requests`; script failures with :meth:`fail_next`.
    """

    def __init__(
        self,
        *,
        email: str = "lms-bot@zulip.example.com",
        api_key: str = "test-api-key",
        feature_level: int = 300,
        zulip_version: str = "9.0",
        port: int = 0,
        rate_limit: tuple[float, int] | None = ZULIP_RATE_LIMIT,
        clock_offset: float = 0.0,
    ) -> None:
        """``rate_limit``: (window seconds, requests) per user, as Zulip's ``api_by_user``; ``None``: off.

        ``clock_offset``: seconds the server's clock is ahead of ours (negative: behind). It shows
        wherever Zulip shows its clock: the ``Date`` header, ``X-RateLimit-Reset``, message timestamps.
        """
        self.clock_offset = clock_offset
        self.email = email
        self.api_key = api_key
        self.feature_level = feature_level
        self.zulip_version = zulip_version
        self.messages: list[StoredMessage] = []
        self.requests: list[RecordedRequest] = []
        #: Channels (name -> id) the bot may post to, what was posted to them, reactions per message id.
        self.channels: dict[str, int] = {}
        self.channel_posts: list[ChannelMessage] = []
        self.reactions: dict[int, list[dict[str, Any]]] = {}
        self._users: dict[int, FakeUser] = {}
        self._faults: dict[str, deque[Fault]] = {}
        self._limiter = SlidingWindowLimiter(*rate_limit) if rate_limit else None
        self._lock = threading.Lock()
        self._next_user_id = 1
        self._next_message_id = 1000
        self._port = port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.add_user(email, "LMS Activity Bot", is_bot=True, api_key=api_key)

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> FakeZulip:
        """Listen and serve in a background thread (idempotent)."""
        if self._httpd is None:
            self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), _handler_for(self))
            self._httpd.daemon_threads = True
            self._port = self._httpd.server_address[1]
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-zulip", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket: connections to :attr:`url` are then refused."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            assert self._thread is not None
            self._thread.join(timeout=5)
            self._httpd = self._thread = None

    def __enter__(self) -> FakeZulip:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def now(self) -> float:
        """The server's clock (epoch seconds)."""
        return time.time() + self.clock_offset

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (pass it as ``site``: no scheme would mean https)."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @staticmethod
    def refused_url() -> str:
        """A loopback URL whose port was just closed, so connecting is refused."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return f"http://127.0.0.1:{sock.getsockname()[1]}"

    def client(self, **kwargs: Any) -> Any:
        """A real ``zulip.Client`` for the bot, with ``retry_on_errors=False`` unless overridden."""
        import zulip

        options: dict[str, Any] = {"site": self.url, "email": self.email, "api_key": self.api_key}
        options["retry_on_errors"] = False
        options.update(kwargs)
        return zulip.Client(**options)

    # --- users --------------------------------------------------------------

    def add_user(
        self,
        email: str,
        full_name: str | None = None,
        *,
        user_id: int | None = None,
        is_active: bool = True,
        is_bot: bool = False,
        api_key: str | None = None,
    ) -> FakeUser:
        """Register a user (``is_active=False`` for a deactivated one); returns it."""
        with self._lock:
            if user_id is None:
                user_id = self._next_user_id
            if user_id in self._users or self._find_email(email) is not None:
                raise ValueError(f"user {user_id} / {email} already exists")
            self._next_user_id = max(self._next_user_id, user_id + 1)
            user = FakeUser(user_id, email, full_name or email.split("@")[0], is_active, is_bot, api_key)
            self._users[user_id] = user
            return user

    def deactivate_user(self, email: str) -> None:
        self.user(email).is_active = False

    def user(self, email_or_id: str | int) -> FakeUser:
        found = self._users.get(email_or_id) if isinstance(email_or_id, int) else self._find_email(email_or_id)
        if found is None:
            raise KeyError(email_or_id)
        return found

    def user_id(self, email: str) -> int:
        return self.user(email).user_id

    def _find_email(self, email: str) -> FakeUser | None:
        email = email.strip().lower()
        return next((u for u in self._users.values() if u.email.lower() == email), None)

    # --- faults and inspection ----------------------------------------------

    def fail_next(
        self,
        endpoint: str,
        status: int,
        times: int = 1,
        retry_after: float | None = None,
        delay: float | None = None,
        store_anyway: bool = False,
        body: Any = None,
        method: str | None = None,
        html: bool = False,
    ) -> None:
        """Script the next ``times`` requests to ``endpoint`` (``"messages"``, ``"users"``, ``"server_settings"``).

        With ``method`` only requests of that method (``"POST"``) take the fault.

        ``status`` 429 replies ``RATE_LIMIT_HIT`` with ``retry_after`` seconds
        (default 1) in the body and the ``Retry-After`` header; 500 replies a
        JSON error; 502/503/504 an HTML page as a proxy would; 200 answers
        normally (use it with ``delay`` for a slow server). ``html`` makes any
        status (200 and 4xx included) an HTML page, as a proxy or WAF answering
        for the server. ``delay`` sleeps before replying; ``store_anyway``
        stores a sent message before the error (the duplicate-DM hazard: Zulip
        did its work, something in front of it spoilt the answer). ``body``
        overrides the reply body, whatever the status (a ``str`` is sent as HTML).
        """
        fault = Fault(status, retry_after, delay, store_anyway, body, html)
        key = endpoint_of(endpoint) if method is None else f"{method.upper()} {endpoint_of(endpoint)}"
        with self._lock:
            self._faults.setdefault(key, deque()).extend([fault] * times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def messages_to(self, email_or_id: str | int) -> list[StoredMessage]:
        """Stored messages whose recipients include that user."""
        user_id = self.user(email_or_id).user_id
        return [m for m in self.messages if user_id in m.recipient_ids]

    def requests_to(self, endpoint: str, method: str | None = None) -> list[RecordedRequest]:
        return [r for r in self.requests if r.endpoint == endpoint_of(endpoint) and method in (None, r.method)]

    def _take_fault(self, method: str, endpoint: str) -> Fault | None:
        with self._lock:
            for key in (f"{method} {endpoint}", endpoint):
                if queue := self._faults.get(key):
                    return queue.popleft()
            return None

    # --- request handling ---------------------------------------------------

    def handle(self, method: str, raw_path: str, params: dict[str, str], auth: str | None) -> _Reply:
        """Answer one request (called from the server threads)."""
        path = urllib.parse.urlsplit(raw_path).path
        endpoint = endpoint_of(path)
        record = RecordedRequest(method, path, endpoint, params, None, time.time())
        with self._lock:
            self.requests.append(record)
        fault = self._take_fault(method, endpoint)
        try:
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if fault is not None and (fault.status != 200 or fault.html or fault.body is not None):
                if fault.store_anyway and endpoint == "messages" and method == "POST":
                    try:  # Zulip did the work (and counted it); the reply is lost on the way
                        sender = self._authenticate(auth)
                        self._rate_limit(sender)
                        self._send(sender, params)
                    except ApiError:
                        pass
                reply = self._fault_reply(fault)
            else:
                reply = self._route(method, path, params, auth, record)
        except ApiError as error:
            reply = error.reply
        except Exception as error:  # noqa: BLE001 - a bug in the fake must not look like a network failure
            reply = _Reply(500, {"result": "error", "msg": f"Fake Zulip crashed: {error!r}", "code": "BAD_REQUEST"})
        record.status = reply.status
        return reply

    def _fault_reply(self, fault: Fault) -> _Reply:
        if fault.html:
            return _Reply(fault.status, fault.body if isinstance(fault.body, str) else _proxy_page(fault.status))
        if fault.status == 429:
            wait = 1 if fault.retry_after is None else fault.retry_after
            body = fault.body or {
                "result": "error",
                "msg": "API usage exceeded rate limit",
                "code": "RATE_LIMIT_HIT",
                "retry-after": wait,
            }
            headers = {
                "Retry-After": str(wait),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(self.now() + wait)),
            }
            return _Reply(429, body, headers)
        if fault.body is not None:
            return _Reply(fault.status, fault.body)
        if fault.status == 500:
            return _Reply(500, {"result": "error", "msg": "Internal server error", "code": "BAD_REQUEST"})
        if fault.status >= 500:
            return _Reply(fault.status, f"<html><body><h1>{fault.status} Bad Gateway</h1></body></html>")
        return _Reply(fault.status, {"result": "error", "msg": f"Scripted error {fault.status}", "code": "BAD_REQUEST"})

    def _authenticate(self, auth: str | None) -> FakeUser:
        if not auth or not auth.startswith("Basic "):
            raise ApiError(401, "UNAUTHORIZED", "Not logged in: API authentication or user session required")
        try:
            email, _, key = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            raise ApiError(401, "UNAUTHORIZED", "Not logged in: API authentication or user session required") from None
        user = self._find_email(email)
        if user is None or user.api_key is None or user.api_key != key:
            raise ApiError(401, "INVALID_API_KEY", "Invalid API key")
        if not user.is_active:
            raise ApiError(401, "USER_DEACTIVATED", "Account is deactivated")
        return user

    def _route(
        self, method: str, path: str, params: dict[str, str], auth: str | None, record: RecordedRequest
    ) -> _Reply:
        parts = path[len(API_PREFIX) :].strip("/").split("/") if path.startswith(API_PREFIX) else []
        if parts == ["server_settings"] and method == "GET":
            return _Reply(200, self._server_settings())
        if not parts or parts[0] not in ("users", "messages"):
            raise ApiError(404, "BAD_REQUEST", "Endpoint does not exist.")
        sender = self._authenticate(auth)
        record.sender_email = sender.email
        limits = self._rate_limit(sender)
        try:
            reply = self._answer(method, parts, params, sender)
        except ApiError as error:
            error.reply.headers.update(limits)
            raise
        reply.headers.update(limits)
        return reply

    def _rate_limit(self, sender: FakeUser) -> dict[str, str]:
        if self._limiter is None:
            return {}
        with self._lock:
            return self._limiter.hit(sender.user_id, self.now())

    def _answer(self, method: str, parts: list[str], params: dict[str, str], sender: FakeUser) -> _Reply:
        if parts == ["messages"] and method == "POST":
            channel = params.get("type") in ("stream", "channel")
            message_id = self._send_to_channel(sender, params) if channel else self._send(sender, params)
            return _Reply(200, {"result": "success", "msg": "", "id": message_id})
        if parts == ["messages"] and method == "GET":
            return _Reply(200, self._get_messages(sender, params))
        if parts[0] == "messages" and len(parts) >= 2 and parts[1].isdigit():
            return self._message_endpoint(method, parts, params, sender)
        if parts[0] == "users" and len(parts) == 2 and method == "GET":
            key = urllib.parse.unquote(parts[1])
            if key == "me":
                user = sender
            else:
                user = self._users.get(int(key)) if key.isascii() and key.isdigit() else self._find_email(key)
            if user is None:
                raise ApiError(400, "BAD_REQUEST", "No such user")
            return _Reply(200, {"result": "success", "msg": "", "user": user.as_json()})
        raise ApiError(405 if parts[0] == "messages" else 404, "BAD_REQUEST", "Method Not Allowed")

    # --- channel messages and reactions -----------------------------------------

    def add_channel(self, name: str) -> int:
        """Create channel ``name`` (the bot may post to it); returns its id."""
        return self.channels.setdefault(name, 100 + len(self.channels))

    def channel_messages(self, channel: str | None = None, topic: str | None = None) -> list[ChannelMessage]:
        """Posted channel messages, oldest first (only those of ``channel`` / ``topic`` when given)."""
        with self._lock:
            stored = list(self.channel_posts)
        return [m for m in stored if channel in (None, m.channel) and topic in (None, m.topic)]

    def _send_to_channel(self, sender: FakeUser, params: dict[str, str]) -> int:
        channels = self.channels
        raw = params.get("to", "")
        if not raw:
            raise ApiError(400, "BAD_REQUEST", "Missing 'to' argument")
        try:
            target: Any = json.loads(raw)
        except ValueError:
            target = raw
        if isinstance(target, list) and len(target) == 1:
            target = target[0]
        if isinstance(target, int) and not isinstance(target, bool):
            name = next((n for n, i in channels.items() if i == target), None)
            if name is None:
                raise ApiError(
                    400, "STREAM_DOES_NOT_EXIST", f"Channel with ID '{target}' does not exist", stream=target
                )
        elif isinstance(target, str):
            name = target
        else:
            raise ApiError(400, "BAD_REQUEST", "Invalid 'to' argument")
        if name not in channels:
            raise ApiError(400, "STREAM_DOES_NOT_EXIST", f"Channel '{name}' does not exist", stream=name)
        topic = " ".join(params.get("topic", params.get("subject", "")).split())
        if not topic:
            raise ApiError(400, "BAD_REQUEST", "Missing topic")
        if len(topic) > MAX_TOPIC_NAME_LENGTH:
            topic = topic[: MAX_TOPIC_NAME_LENGTH - 1] + "…"
        if "content" not in params:
            raise ApiError(400, "BAD_REQUEST", "Missing 'content' argument")
        content = params["content"].rstrip().lstrip("\n")
        if not content:
            raise ApiError(400, "BAD_REQUEST", "Message must not be empty")
        if len(content) > MAX_MESSAGE_LENGTH:
            content = content[: MAX_MESSAGE_LENGTH - len(TRUNCATION_SUFFIX)] + TRUNCATION_SUFFIX
        with self._lock:
            message = ChannelMessage(self._next_message_id, name, topic, content, sender.email, self.now())
            self._next_message_id += 1
            self.channel_posts.append(message)
        return message.id

    def _message_for(self, message_id: str, reader: FakeUser) -> StoredMessage:
        """The stored message ``message_id`` if ``reader`` may see it (sender or recipient), as Zulip checks."""
        found = next((m for m in self.messages if str(m.id) == message_id), None)
        if found is None or reader.user_id not in {*found.recipient_ids, self.user(found.sender_email).user_id}:
            raise ApiError(400, "BAD_REQUEST", "Invalid message(s)")
        return found

    def _message_endpoint(self, method: str, parts: list[str], params: dict[str, str], sender: FakeUser) -> _Reply:
        """``GET /messages/{id}`` (with its ``reactions``) and ``POST``/``DELETE /messages/{id}/reactions``."""
        message = self._message_for(parts[1], sender)
        reactions = self.reactions.setdefault(message.id, [])
        if len(parts) == 2 and method == "GET":
            body = {
                "id": message.id,
                "type": "private",
                "sender_id": self.user(message.sender_email).user_id,
                "sender_email": message.sender_email,
                "content": message.content if params.get("apply_markdown") == "false" else f"<p>{message.content}</p>",
                "timestamp": int(message.timestamp),
                "reactions": [dict(r) for r in reactions],
            }
            return _Reply(200, {"result": "success", "msg": "", "message": body, "raw_content": message.content})
        if parts[2:] == ["reactions"] and method in ("POST", "DELETE"):
            name = params.get("emoji_name", "")
            code = params.get("emoji_code") or FAKE_EMOJI.get(name)
            if not name or code is None:
                raise ApiError(400, "BAD_REQUEST", f"Emoji '{name}' does not exist")
            mine = [r for r in reactions if r["user_id"] == sender.user_id and r["emoji_code"] == code]
            if method == "POST":
                if mine:
                    raise ApiError(400, "BAD_REQUEST", "Reaction already exists.")
                reactions.append(
                    {
                        "emoji_name": name,
                        "emoji_code": code,
                        "reaction_type": params.get("reaction_type", "unicode_emoji"),
                        "user_id": sender.user_id,
                        "user": {"id": sender.user_id, "email": sender.email, "full_name": sender.full_name},
                    }
                )
            else:
                if not mine:
                    raise ApiError(400, "BAD_REQUEST", "Reaction doesn't exist.")
                reactions.remove(mine[0])
            return _Reply(200, {"result": "success", "msg": ""})
        raise ApiError(405, "BAD_REQUEST", "Method Not Allowed")

    def _server_settings(self) -> dict[str, Any]:
        return {
            "result": "success",
            "msg": "",
            "authentication_methods": {"password": True, "dev": False},
            "zulip_version": self.zulip_version,
            "zulip_merge_base": self.zulip_version,
            "zulip_feature_level": self.feature_level,
            "push_notifications_enabled": False,
            "is_incompatible": False,
            "email_auth_enabled": True,
            "require_email_format_usernames": True,
            "realm_uri": self.url,
            "realm_url": self.url,
            "realm_name": "Fake Zulip",
            "realm_icon": "",
            "realm_description": "",
            "realm_web_public_access_enabled": False,
        }

    def _send(self, sender: FakeUser, params: dict[str, str]) -> int:
        """Validate and store a direct message like Zulip's ``POST /messages``; returns its id."""
        kind = params.get("type", "")
        allowed = ("direct", "private") if self.feature_level >= DIRECT_TYPE_FEATURE_LEVEL else ("private",)
        if kind not in allowed:
            raise ApiError(400, "BAD_REQUEST", "Invalid message type")
        if "to" not in params:
            raise ApiError(400, "BAD_REQUEST", "Missing 'to' argument")
        if "content" not in params:
            raise ApiError(400, "BAD_REQUEST", "Missing 'content' argument")
        recipients = [self._recipient(r) for r in _parse_recipients(params["to"])]
        for user in recipients:
            if not user.is_active:
                raise ApiError(400, "BAD_REQUEST", f"'{user.email}' is no longer using Zulip.")
        content = params["content"].rstrip().lstrip("\n")
        if not content:
            raise ApiError(400, "BAD_REQUEST", "Message must not be empty")
        if "\x00" in content:
            raise ApiError(400, "BAD_REQUEST", "Message must not contain null bytes")
        if len(content) > MAX_MESSAGE_LENGTH:
            content = content[: MAX_MESSAGE_LENGTH - len(TRUNCATION_SUFFIX)] + TRUNCATION_SUFFIX
        with self._lock:
            message = StoredMessage(
                self._next_message_id, kind, sorted({u.user_id for u in recipients}), content, sender.email, self.now()
            )
            self._next_message_id += 1
            self.messages.append(message)
        return message.id

    def _get_messages(self, reader: FakeUser, params: dict[str, str]) -> dict[str, Any]:
        """``GET /messages`` with ``anchor=newest``, ``num_before`` and a ``dm``/``pm-with`` narrow."""
        if params.get("anchor") != "newest":
            raise ApiError(400, "BAD_REQUEST", "The fake Zulip server only supports anchor=newest")
        try:
            num_before = int(params.get("num_before", "0"))
            narrow = json.loads(params.get("narrow", "[]"))
        except ValueError:
            raise ApiError(400, "BAD_REQUEST", "Invalid num_before or narrow") from None
        operators = {"dm", "pm-with"} if self.feature_level >= DM_NARROW_FEATURE_LEVEL else {"pm-with"}
        if not isinstance(narrow, list) or len(narrow) != 1 or not isinstance(narrow[0], dict):
            raise ApiError(400, "BAD_REQUEST", "The fake Zulip server needs exactly one dm narrow")
        if narrow[0].get("operator") not in operators:
            raise ApiError(400, "BAD_REQUEST", f"Invalid narrow operator: {narrow[0].get('operator')}")
        operand = narrow[0].get("operand")
        keys = operand if isinstance(operand, list) else _parse_recipients(str(operand))
        people = {self._recipient(k).user_id for k in keys} | {reader.user_id}
        with self._lock:
            conversation = [m for m in self.messages if {*m.recipient_ids, self.user(m.sender_email).user_id} == people]
        found = conversation[-num_before:] if num_before > 0 else []
        markdown = params.get("apply_markdown", "true") != "false"
        return {
            "result": "success",
            "msg": "",
            "anchor": found[-1].id if found else 0,
            "found_newest": True,
            "found_oldest": len(found) == len(conversation),
            "messages": [
                {
                    "id": m.id,
                    "type": "private",
                    "sender_id": self.user(m.sender_email).user_id,
                    "sender_email": m.sender_email,
                    "content": f"<p>{m.content}</p>" if markdown else m.content,
                    "timestamp": int(m.timestamp),
                    "display_recipient": [
                        {"id": u, "email": self.user(u).email} for u in sorted({*m.recipient_ids, reader.user_id})
                    ],
                }
                for m in found
            ],
        }

    def _recipient(self, key: int | str) -> FakeUser:
        if isinstance(key, int):
            user = self._users.get(key)
            if user is None:
                raise ApiError(400, "BAD_REQUEST", f"Invalid user ID {key}")
        else:
            user = self._find_email(key)
            if user is None:
                raise ApiError(400, "BAD_REQUEST", f"Invalid email '{key}'")
        return user


def _proxy_page(status: int) -> str:
    """The kind of page nginx, a load balancer or a WAF sends instead of the server's JSON."""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return f"<html><head><title>{status} {reason}</title></head><body><center><h1>{status} {reason}</h1></center></body></html>"


def _parse_recipients(raw: str) -> list[int | str]:
    """``to`` as Zulip reads it: a JSON list of ids or of emails, one id, or comma-separated emails."""
    try:
        value = json.loads(raw)
    except ValueError:
        value = [part.strip() for part in raw.split(",") if part.strip()]
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ApiError(400, "BAD_REQUEST", "Invalid 'to' argument")
    kinds = {type(v) for v in value}
    if not (kinds <= {int} or kinds <= {str}):
        raise ApiError(400, "BAD_REQUEST", "Recipient lists may contain emails or user IDs, but not both.")
    return value


def _handler_for(server: FakeZulip) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeZulip/1.0"

        def _serve(self) -> None:
            split = urllib.parse.urlsplit(self.path)
            params = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                body = self.rfile.read(length).decode("utf-8")
                params.update(urllib.parse.parse_qsl(body, keep_blank_values=True))
            reply = server.handle(self.command, self.path, params, self.headers.get("Authorization"))
            is_json = not isinstance(reply.body, str)
            payload = (json.dumps(reply.body) if is_json else reply.body).encode("utf-8")
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json" if is_json else "text/html")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout) before the reply

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def date_time_string(self, timestamp: float | None = None) -> str:
            """The ``Date`` header, on the server's clock."""
            return super().date_time_string(server.now() if timestamp is None else timestamp)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
