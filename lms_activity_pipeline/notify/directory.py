"""LMS mentor e-mail -> Zulip account: the warehouse cache first, then ``GET users/{email}``."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

from lms_activity_pipeline.domain.delivery import Delivery, ReplyKind, RetryPolicy, call_with_retries
from lms_activity_pipeline.domain.recipients import ZulipAccount
from lms_activity_pipeline.notify.zulip_gateway import ZulipGateway
from lms_activity_pipeline.warehouse.zulip_user_cache import ZulipUserCache


@dataclass(frozen=True)
class Resolution:
    """The account of an e-mail, or the failed lookup (``account`` is ``None`` then)."""

    account: ZulipAccount | None
    failure: Delivery | None = None


class MentorDirectory:
    """Resolves mentors to Zulip accounts; each e-mail is asked about at most once per expiry.

    Found accounts are cached for ``ttl``, "No such user" answers for the
    shorter ``unknown_ttl`` (a mentor who joins Zulip is found soon). Failed
    lookups are not cached.
    """

    def __init__(
        self,
        gateway: ZulipGateway,
        policy: RetryPolicy,
        *,
        cache: Callable[[str], ZulipUserCache],
        ttl: dt.timedelta,
        unknown_ttl: dt.timedelta,
        clock: Callable[[], dt.datetime],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.gateway = gateway
        self.policy = policy
        self._cache_for = cache
        self.ttl = ttl
        self.unknown_ttl = unknown_ttl
        self.clock = clock
        self.sleep = sleep
        self.lookups = 0

    def _cache(self) -> ZulipUserCache:
        return self._cache_for(self.gateway.site)

    def resolve(self, email: str) -> Resolution:
        """The account of ``email``: from the cache while fresh (no request at all), else asked."""
        cached = self._cache().get(email, self.clock())
        if cached is not None:
            return Resolution(cached)
        return self._lookup(email)

    def refresh(self, email: str) -> Resolution:
        """Ask Zulip again (e.g. after a send was refused: the user may have been deactivated)."""
        return self._lookup(email)

    def _lookup(self, email: str) -> Resolution:
        self.lookups += 1
        delivery = call_with_retries(
            lambda: self.gateway.lookup_user(email), self.policy, self.sleep, self.gateway.pause
        )
        reply = delivery.reply
        if reply.ok and isinstance(reply.body.get("user"), dict):
            account = ZulipAccount.from_api(email, reply.body["user"])
            self._cache().put(account, self.clock(), self.ttl)
            return Resolution(account)
        if reply.kind is ReplyKind.REJECTED and reply.status == 400:
            account = ZulipAccount.unknown(email)  # Zulip: 400 BAD_REQUEST "No such user"
            self._cache().put(account, self.clock(), self.unknown_ttl)
            return Resolution(account)
        return Resolution(None, delivery)
