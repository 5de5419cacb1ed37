"""Requests to a Zulip server through the official ``zulip`` client, as classified replies.

The client is built lazily (its constructor already calls ``GET
/api/v1/server_settings``) with ``retry_on_errors=False``; every reply or
exception becomes a :class:`~lms_activity_pipeline.domain.delivery.Reply`, and
retrying is the caller's business
(:func:`~lms_activity_pipeline.domain.delivery.call_with_retries`). The client
returns error replies as dicts without their HTTP status, so a ``requests``
response hook keeps the status, content type and ``Retry-After`` header of the
last reply. Error texts never contain the API key (it travels only in the auth header).

``POST messages`` has no idempotency key, so a send that failed after reaching
the server is marked ``maybe_done`` and :meth:`ZulipGateway.find_direct` can
ask the server whether the message was stored before it is sent again. A reply
that is not a well-formed Zulip answer (a proxy or WAF page of any status, even
200, which the client turns into ``{"result": "http-error"}``; JSON of another
shape; a success without the expected field) says nothing about what Zulip did:
for the send it means "maybe delivered", for an idempotent GET it is retryable.

Zulip sends ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (epoch seconds
when the bot may burst again) on every reply: after one that leaves nothing,
:meth:`ZulipGateway.pause` tells the caller how long to hold off instead of
collecting a 429. The reset is read against the reply's ``Date`` header, so our
clock's skew against the server's does not matter; for the same reason
:meth:`ZulipGateway.find_direct` compares message timestamps (the server's clock)
with our request time moved onto the server's clock.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import zulip

from lms_activity_pipeline.domain.delivery import Reply, ReplyKind
from lms_activity_pipeline.domain.recipients import user_path

#: Zulip 7.0 (feature level 174) renamed the ``private`` message type to ``direct``.
DIRECT_TYPE_FEATURE_LEVEL = 174
#: Zulip 7.0 (feature level 177) renamed the ``pm-with`` narrow operator to ``dm``.
DM_NARROW_FEATURE_LEVEL = 177
#: How many of a conversation's newest messages :meth:`ZulipGateway.find_direct` reads.
FIND_WINDOW = 100
#: Margin when matching a stored message's time against our request's (moved onto the server's clock
#: by the ``Date`` header, which has a 1 s resolution).
CLOCK_SLACK_SECONDS = 120.0
CLIENT_NAME = "lms-activity-pipeline"
MAX_ERROR_LENGTH = 300


def _short(text: object) -> str:
    clean = " ".join(str(text).split())
    return clean if len(clean) <= MAX_ERROR_LENGTH else clean[: MAX_ERROR_LENGTH - 1] + "…"


class ZulipGateway:
    """Requests to one Zulip server with a lazily built ``zulip.Client`` (not thread-safe: one per run)."""

    def __init__(self, client_options: Mapping[str, Any], timeout: float) -> None:
        self._options = dict(client_options)
        self.timeout = timeout
        self._client: Any = None
        self._last_status: int | None = None
        self._last_retry_after: str | None = None
        self._last_content_type: str | None = None
        #: ``time.monotonic()`` before which Zulip would refuse our next request (its rate limit is used up).
        self._hold_until: float | None = None
        #: The server's clock minus ours, from the last reply's ``Date`` header (1 s resolution).
        self._server_offset = 0.0

    @property
    def site(self) -> str:
        """The configured server (or zuliprc), known without connecting: the key of the user cache."""
        if self._options.get("site"):
            return str(self._options["site"]).rstrip("/")
        return f"zuliprc:{self._options.get('config_file', '')}"

    @property
    def message_type(self) -> str:
        level = getattr(self._client, "feature_level", 0) or 0
        return "direct" if level >= DIRECT_TYPE_FEATURE_LEVEL else "private"

    def connect(self) -> Reply:
        """Build the client if needed; a server that is down is a retryable reply, not an exception."""
        if self._client is not None:
            return Reply(ReplyKind.OK)
        try:
            client = zulip.Client(retry_on_errors=False, client=CLIENT_NAME, **self._options)
        except zulip.UnrecoverableNetworkError as exc:
            return Reply(ReplyKind.RETRYABLE, error=f"Zulip unreachable: {_short(exc)}")
        except AssertionError:
            return Reply(
                ReplyKind.RETRYABLE, error="unexpected reply to GET /api/v1/server_settings (is it a Zulip server?)"
            )
        except requests.exceptions.RequestException as exc:
            return Reply(ReplyKind.RETRYABLE, error=f"Zulip unreachable: {type(exc).__name__}: {_short(exc)}")
        except zulip.ZulipError as exc:
            return Reply(ReplyKind.REJECTED, error=f"Zulip client configuration: {_short(exc)}")
        except (OSError, ValueError) as exc:
            return Reply(
                ReplyKind.RETRYABLE, error=f"Zulip client could not start: {type(exc).__name__}: {_short(exc)}"
            )
        client.ensure_session()
        assert client.session is not None  # ensure_session made it
        client.session.hooks["response"].append(self._remember_response)
        self._client = client
        return Reply(ReplyKind.OK)

    def lookup_user(self, email: str) -> Reply:
        """``GET users/{email}``: OK with ``body["user"]``, or REJECTED for "No such user"."""
        return self._call(user_path(email), "GET", None, idempotent=True, expect=("user", dict))

    def send_direct(self, user_ids: Sequence[int], content: str) -> Reply:
        """``POST messages`` to ``user_ids``: OK with ``body["id"]``."""
        connected = self.connect()
        if not connected.ok:
            return connected
        request = {"type": self.message_type, "to": [int(u) for u in user_ids], "content": content}
        return self._call("messages", "POST", request, idempotent=False, expect=("id", int))

    def send_to_channel(self, channel: str, topic: str, content: str) -> Reply:
        """``POST messages`` of ``type`` ``stream`` (every server version accepts it) to ``channel`` and
        ``topic``: OK with ``body["id"]``."""
        request = {"type": "stream", "to": channel, "topic": topic, "content": content}
        return self._call("messages", "POST", request, idempotent=False, expect=("id", int))

    def find_direct(self, user_ids: Sequence[int], digest: str, sent_after: float) -> Reply:
        """Is a DM from us to ``user_ids`` whose text has ``digest`` (:func:`content_digest`), sent
        after ``sent_after`` (epoch s), stored?

        OK with ``body["id"]`` when it is, OK without an id when it certainly is
        not; UNCERTAIN when the conversation has too many newer messages to tell;
        errors as for any request. Reads the conversation's newest messages.
        """
        connected = self.connect()
        if not connected.ok:
            return connected
        level = getattr(self._client, "feature_level", 0) or 0
        operator = "dm" if level >= DM_NARROW_FEATURE_LEVEL else "pm-with"
        request = {
            "anchor": "newest",
            "num_before": FIND_WINDOW,
            "num_after": 0,
            "narrow": [{"operator": operator, "operand": [int(u) for u in user_ids]}],
            "apply_markdown": False,
        }
        reply = self._call("messages", "GET", request, idempotent=True, expect=("messages", list))
        if not reply.ok:
            return reply
        me = str(getattr(self._client, "email", "") or "").lower()
        earliest = sent_after + self._server_offset - CLOCK_SLACK_SECONDS  # on the server's clock
        messages = reply.body.get("messages") or []
        for message in reversed(messages):
            if (
                str(message.get("sender_email", "")).lower() == me
                and content_digest(str(message.get("content", ""))) == digest
                and float(message.get("timestamp") or 0) >= earliest
            ):
                return Reply(ReplyKind.OK, {"result": "success", "id": message.get("id")}, status=reply.status)
        reaches_back = bool(reply.body.get("found_oldest")) or any(
            float(m.get("timestamp") or 0) < earliest for m in messages
        )
        if not reaches_back:
            return Reply(
                ReplyKind.UNCERTAIN,
                error=f"more than {FIND_WINDOW} newer messages in the conversation: cannot tell whether it was stored",
                status=reply.status,
            )
        return Reply(ReplyKind.OK, {"result": "success"}, status=reply.status)

    def get_message(self, message_id: int) -> Reply:
        """``GET messages/{message_id}``: OK with ``body["message"]`` (its ``reactions`` among the fields)."""
        return self._call(f"messages/{int(message_id)}", "GET", None, idempotent=True, expect=("message", dict))

    # --- internals ------------------------------------------------------------------

    def pause(self) -> float:
        """Seconds to hold off before the next request: Zulip said the rate limit is used up until then."""
        if self._hold_until is None:
            return 0.0
        return max(0.0, self._hold_until - time.monotonic())

    def _remember_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        self._last_status = response.status_code
        self._last_retry_after = response.headers.get("Retry-After")
        self._last_content_type = response.headers.get("Content-Type")
        if (server_now := _server_time(response.headers.get("Date"))) is not None:
            self._server_offset = server_now - time.time()
        self._remember_rate_limit(response.headers)
        return response

    def _remember_rate_limit(self, headers: Mapping[str, str]) -> None:
        remaining = _number(headers.get("X-RateLimit-Remaining"))
        if remaining is None:
            return  # a reply without them (a proxy's page, rate limiting off) tells nothing new
        if remaining > 0:
            self._hold_until = None
            return
        reset = _number(headers.get("X-RateLimit-Reset"))
        if reset is None:
            return
        server_now = _server_time(headers.get("Date"))
        self._hold_until = time.monotonic() + max(0.0, reset - (time.time() if server_now is None else server_now))

    def _call(
        self,
        url: str,
        method: str,
        request: dict[str, Any] | None,
        *,
        idempotent: bool,
        expect: tuple[str, type] | None = None,
    ) -> Reply:
        """One request; ``expect`` is the field (and its type) a success of this endpoint must carry."""
        connected = self.connect()
        if not connected.ok:
            return connected
        self._last_status = self._last_retry_after = self._last_content_type = None
        try:
            body = self._client.call_endpoint(url=url, method=method, request=request, timeout=self.timeout)
        except requests.exceptions.ConnectTimeout as exc:
            return Reply(ReplyKind.RETRYABLE, error=f"connect timeout: {_short(exc)}")
        except requests.exceptions.Timeout:
            kind = ReplyKind.RETRYABLE if idempotent else ReplyKind.UNCERTAIN
            return Reply(kind, error=f"no reply within {self.timeout:g} s")
        except requests.exceptions.ConnectionError as exc:
            reached = not idempotent and not _never_connected(exc)
            return Reply(ReplyKind.RETRYABLE, error=f"connection error: {_short(exc)}", maybe_done=reached)
        except requests.exceptions.RequestException as exc:
            kind = ReplyKind.RETRYABLE if idempotent else ReplyKind.UNCERTAIN
            return Reply(kind, error=f"{type(exc).__name__}: {_short(exc)}")
        except zulip.UnrecoverableNetworkError as exc:  # the client's wrapping of TLS errors and refused connects
            reached = not idempotent and "SSL" in str(exc)
            return Reply(ReplyKind.RETRYABLE, error=f"Zulip unreachable: {_short(exc)}", maybe_done=reached)
        return self._classify(body if isinstance(body, dict) else {}, idempotent, expect)

    def _classify(self, body: dict[str, Any], idempotent: bool, expect: tuple[str, type] | None) -> Reply:
        status = self._last_status or body.get("status_code")
        if status == 429 or body.get("code") == "RATE_LIMIT_HIT":  # whoever says so, nothing was done
            msg = _short(body.get("msg") or "Too Many Requests")
            return Reply(
                ReplyKind.RATE_LIMITED, body, f"rate limited: {msg}", status, _retry_after(body, self._last_retry_after)
            )
        if problem := _not_a_zulip_answer(body, expect):
            # Something other than Zulip answered, or spoilt Zulip's answer: the request may have
            # been carried out. Asking again is safe for a GET; a send must be looked up first.
            described = f"HTTP {status or '?'}: {problem} ({self._last_content_type or 'no content type'})"
            return Reply(ReplyKind.RETRYABLE, body, described, status, maybe_done=not idempotent)
        if body["result"] == "success":
            return Reply(ReplyKind.OK, body, status=status)
        code, msg = body.get("code"), _short(body.get("msg") or "no message")
        described = f"HTTP {status or '?'}{f' {code}' if code else ''}: {msg}"
        if status is None or status >= 500:
            return Reply(ReplyKind.RETRYABLE, body, described, status, maybe_done=not idempotent)
        return Reply(ReplyKind.REJECTED, body, described, status)


def stored_form(content: str) -> str:
    """``content`` as Zulip stores it (trailing whitespace and leading newlines stripped)."""
    return content.rstrip().lstrip("\n")


def content_digest(content: str) -> str:
    """SHA-256 (hex) of a message text as Zulip stores it: how a sent message is recognised later."""
    return hashlib.sha256(stored_form(content).encode()).hexdigest()


def _never_connected(exc: BaseException) -> bool:
    """True when a ``requests`` connection error happened before the request was sent (e.g. refused)."""
    from urllib3.exceptions import NewConnectionError

    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, NewConnectionError):
            return True
        todo.extend([*item.args, getattr(item, "reason", None), item.__cause__, item.__context__])
    return False


def _not_a_zulip_answer(body: Mapping[str, Any], expect: tuple[str, type] | None) -> str | None:
    """Why ``body`` is not a well-formed Zulip reply (``None`` when it is one).

    Zulip always answers JSON with ``result`` ``success`` or ``error``; the
    client reports any other body as ``result: http-error``.
    """
    result = body.get("result")
    if result == "http-error":
        return "not a Zulip API reply"
    if result not in ("success", "error"):
        return "a JSON reply not in Zulip's shape"
    if result == "success" and expect is not None:
        name, kind = expect
        value = body.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            return f"a success reply without {name!r}"
    return None


def _number(value: str | None) -> float | None:
    """A header as a finite number, else ``None``."""
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _server_time(date_header: str | None) -> float | None:
    """The server's clock when it answered (its ``Date`` header), ``None`` without a usable one."""
    try:
        return parsedate_to_datetime(date_header).timestamp() if date_header else None
    except (TypeError, ValueError):
        return None


def _retry_after(body: Mapping[str, Any], header: str | None) -> float | None:
    for value in (body.get("retry-after"), header):
        try:
            if value is not None:
                return float(value)
        except (TypeError, ValueError):
            continue
    return None
