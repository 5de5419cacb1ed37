"""Retry policy for Zulip requests: what each kind of reply means and how long to wait.

Pure Python: the Zulip gateway turns HTTP replies and exceptions into a
:class:`Reply`; :func:`call_with_retries` decides whether to wait and ask again.

- ``ok``: done.
- ``rate_limited`` (429): wait the server's Retry-After and ask again; this is
  not a failed attempt (bounded only by ``max_rate_limit_waits``).
- ``retryable`` (5xx, connection refused, server unreachable): ask again after
  an exponential backoff, at most ``max_attempts`` requests in all.
- ``rejected`` (other 4xx): the server said no; asking again will not help.
- ``uncertain`` (a timeout after the request went out): the message may have
  been delivered. Never repeated here: the outbox asks Zulip later.

A send that failed *after* reaching the server (a 5xx, a dropped connection)
may have been stored anyway: :func:`call_without_duplicates` asks the server
before sending again, so a bounded retry never becomes a duplicate message.

``pace`` (optional) says how long the server asked us to hold off before the
next request even without a 429 (Zulip's ``X-RateLimit-Remaining: 0`` until
``X-RateLimit-Reset``); that pause is taken before the request, within the same
wait caps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ReplyKind(StrEnum):
    OK = "ok"
    RATE_LIMITED = "rate_limited"
    RETRYABLE = "retryable"
    REJECTED = "rejected"
    UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class Reply:
    """One Zulip request's outcome, classified."""

    kind: ReplyKind
    body: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    status: int | None = None
    retry_after: float | None = None
    #: The request reached the server before failing: it may have been carried out.
    maybe_done: bool = False

    @property
    def ok(self) -> bool:
        return self.kind is ReplyKind.OK

    @property
    def is_systemic(self) -> bool:
        """A failure that will hit every mentor alike: server/network trouble (timeouts included),
        bad credentials or configuration."""
        if self.kind in (ReplyKind.RETRYABLE, ReplyKind.RATE_LIMITED, ReplyKind.UNCERTAIN):
            return True
        return self.kind is ReplyKind.REJECTED and (self.status is None or self.status in (401, 403))


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff; Retry-After honoured for 429s."""

    max_attempts: int = 3
    backoff_seconds: float = 2.0
    backoff_factor: float = 2.0
    max_backoff_seconds: float = 60.0
    max_rate_limit_waits: int = 20
    default_retry_after_seconds: float = 1.0
    max_retry_after_seconds: float = 300.0
    #: All waits of one request together (rate limits and backoff) stay below this.
    max_total_wait_seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if (
            min(
                self.backoff_seconds,
                self.max_backoff_seconds,
                self.max_retry_after_seconds,
                self.max_total_wait_seconds,
            )
            < 0
        ):
            raise ValueError("waits must be >= 0")

    def backoff(self, failed_attempts: int) -> float:
        """Seconds to wait after the ``failed_attempts``-th failed request (1, 2, ...)."""
        delay = self.backoff_seconds * self.backoff_factor ** max(failed_attempts - 1, 0)
        return min(delay, self.max_backoff_seconds)

    def rate_limit_wait(self, retry_after: float | None) -> float:
        """The server's Retry-After, defaulted when missing and capped when absurd."""
        if retry_after is None or retry_after != retry_after or retry_after < 0:
            retry_after = self.default_retry_after_seconds
        return min(retry_after, self.max_retry_after_seconds)


@dataclass(frozen=True)
class Delivery:
    """The final reply of a request and what it took to get it."""

    reply: Reply
    attempts: int
    rate_limit_waits: int = 0
    waited_seconds: float = 0.0
    #: Part of ``waited_seconds`` spent pacing before requests (no 429 needed).
    paced_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.reply.ok

    @property
    def error(self) -> str | None:
        """A readable error for the log (``None`` on success)."""
        if self.reply.ok:
            return None
        reason = self.reply.error or "unknown error"
        if self.reply.kind is ReplyKind.RETRYABLE:
            return f"gave up after {self.attempts} attempt(s): {reason}"
        if self.reply.kind is ReplyKind.RATE_LIMITED:
            return f"still rate limited after {self.rate_limit_waits} waits: {reason}"
        if self.reply.kind is ReplyKind.UNCERTAIN:
            return f"uncertain delivery (Zulip is asked before any resend): {reason}"
        return reason


Pace = Callable[[], float]


def call_with_retries(
    call: Callable[[], Reply],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    pace: Pace | None = None,
) -> Delivery:
    """Call until the reply is final under ``policy``; ``sleep`` is injectable for tests.

    ``pace`` gives the seconds the server wants us to hold off before the next
    request; that pause (capped like a Retry-After) is taken while it fits in
    the message's total wait, else the request goes out and a 429 is handled.
    """
    attempts = waits = 0
    waited = paced = 0.0
    while True:
        hold = 0.0 if pace is None else min(max(pace(), 0.0), policy.max_retry_after_seconds)
        if hold > 0 and waited + hold <= policy.max_total_wait_seconds:
            sleep(hold)
            waited += hold
            paced += hold
        reply = call()
        if reply.kind is ReplyKind.RATE_LIMITED:
            pause = policy.rate_limit_wait(reply.retry_after)
            if waits >= policy.max_rate_limit_waits or waited + pause > policy.max_total_wait_seconds:
                return Delivery(reply, attempts, waits, waited, paced)
            sleep(pause)
            waits += 1
            waited += pause
            continue
        attempts += 1
        if reply.kind is not ReplyKind.RETRYABLE or attempts >= policy.max_attempts:
            return Delivery(reply, attempts, waits, waited, paced)
        pause = policy.backoff(attempts)
        if waited + pause > policy.max_total_wait_seconds:
            return Delivery(reply, attempts, waits, waited, paced)
        sleep(pause)
        waited += pause


def call_without_duplicates(
    send: Callable[[], Reply],
    find: Callable[[], Reply],
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    pace: Pace | None = None,
) -> Delivery:
    """Like :func:`call_with_retries` for a request that must not be carried out twice.

    After a retryable failure that may have been carried out (``maybe_done``),
    ``find`` asks whether it was (itself retried under ``policy``): OK with an
    ``id`` in its body means yes, and that becomes the reply (``body["recovered"]``
    names the error it recovered from); OK without an ``id`` means no, so the
    send is retried; a failed check makes the send ``uncertain``.
    """

    def attempt() -> Reply:
        reply = send()
        if reply.kind is not ReplyKind.RETRYABLE or not reply.maybe_done:
            return reply
        check = call_with_retries(find, policy, sleep, pace)
        if not check.ok:
            return Reply(
                ReplyKind.UNCERTAIN,
                error=f"{reply.error}; could not check whether it was stored: {check.error}",
                status=reply.status,
            )
        if check.reply.body.get("id") is not None:
            return Reply(ReplyKind.OK, {**check.reply.body, "recovered": reply.error}, status=reply.status)
        return reply

    return call_with_retries(attempt, policy, sleep, pace)
