"""Operational alerts to a Zulip channel and topic, through the same gateway and retry policy as the DMs.

:func:`raise_alerts` is the one path: it plans with :func:`~lms_activity_pipeline.domain.alerts.plan_alerts`
against the incidents stored in the warehouse, stores the transitions (whatever happens to the messages),
claims each message and sends it (at least once: a message that failed is tried again later). Without a channel (``LMS_ALERT_ZULIP_STREAM`` unset) or without a
Zulip bot, the message goes to the log only (still once per incident). A message that cannot be sent is
logged and tried again by a later evaluation; nothing here raises into the pipeline: callers get an
:class:`AlertReport`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lms_activity_pipeline.domain.alerts import DEFAULT_ALERTS_PER_HOUR, Alert, MessageKind, Outgoing, plan_alerts
from lms_activity_pipeline.domain.delivery import Delivery, RetryPolicy, call_with_retries
from lms_activity_pipeline.notify.zulip_gateway import ZulipGateway
from lms_activity_pipeline.warehouse.alerts import AlertStore

DEFAULT_TOPIC = "lms-activity alerts"


class Log(Protocol):
    def info(self, msg: str) -> object: ...

    def warning(self, msg: str) -> object: ...


@dataclass
class AlertSender:
    """Where alerts go: ``channel``/``topic`` on the bot's Zulip (``gateway``), else the log only."""

    gateway: ZulipGateway | None
    channel: str | None
    topic: str = DEFAULT_TOPIC
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep

    @property
    def to_zulip(self) -> bool:
        return self.gateway is not None and bool(self.channel)

    def describe(self) -> str:
        if not self.channel:
            return "run logs only (LMS_ALERT_ZULIP_STREAM not set)"
        if self.gateway is None:
            return f"run logs only (no Zulip bot configured for channel {self.channel!r})"
        return f"Zulip channel {self.channel!r}, topic {self.topic!r}"

    def send(self, text: str) -> Delivery:
        """One channel message under the retry policy. Alerts are sent at least once: a failure after the
        request reached the server (a 502 from a proxy, a timeout) is retried, which may post it twice;
        losing an alert would be worse."""
        assert self.gateway is not None and self.channel
        gateway, channel = self.gateway, self.channel
        return call_with_retries(
            lambda: gateway.send_to_channel(channel, self.topic, text), self.policy, self.sleep, gateway.pause
        )


@dataclass
class AlertReport:
    """What one evaluation did."""

    opened: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    logged: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [(self.opened, "opened"), (self.resolved, "resolved"), (self.sent, "sent"), (self.logged, "logged")]
        parts += [(self.held, "held by the hourly cap"), (self.failed, "not sent")]
        return "alerts: " + (", ".join(f"{len(v)} {name}" for v, name in parts if v) or "nothing new")


def raise_alerts(
    store: AlertStore,
    sender: AlertSender,
    active: Sequence[Alert],
    *,
    scope: Collection[str],
    now: dt.datetime,
    log: Log,
    per_hour: int = DEFAULT_ALERTS_PER_HOUR,
) -> AlertReport:
    """Open, resolve and announce incidents; never raises (errors are logged and reported)."""
    report = AlertReport()
    try:
        plan = plan_alerts(
            active, store.incidents(), scope=scope, sent_last_hour=store.sent_last_hour(now), now=now, per_hour=per_hour
        )
        store.open(plan.to_open, now)
        store.seen([a.key for a in active], now)
        store.resolve(plan.to_resolve, now)
    except Exception as exc:  # noqa: BLE001 - alerting must never stop the pipeline
        report.errors.append(f"alert state unavailable: {type(exc).__name__}: {exc}")
        log.warning(f"alerts not evaluated: {report.errors[-1]}")
        return report
    report.opened = [a.key for a in plan.to_open]
    report.resolved = list(plan.to_resolve)
    zulip_down: str | None = None
    for message in plan.send:
        try:
            zulip_down = _deliver(store, sender, message, now, log, report, zulip_down)
        except Exception as exc:  # noqa: BLE001
            report.errors.append(f"{message.key}: {type(exc).__name__}: {exc}")
            log.warning(f"alert {message.key} not sent: {report.errors[-1]}")
    for message in plan.held:
        report.held.append(message.key)
        log.warning(
            f"alert {message.key} ({message.kind}) held: {per_hour} alerts sent in the last hour\n{message.text}"
        )
    return report


def _deliver(
    store: AlertStore,
    sender: AlertSender,
    message: Outgoing,
    now: dt.datetime,
    log: Log,
    report: AlertReport,
    zulip_down: str | None,
) -> str | None:
    """Claim and send (or log) one message; returns why Zulip is unusable for the rest of this evaluation."""
    if zulip_down is not None and sender.to_zulip:
        report.failed.append(message.key)
        log.warning(f"alert {message.key} ({message.kind}) not sent: {zulip_down}\n{message.text}")
        return zulip_down
    if not store.claim(message.key, message.kind, now):
        return zulip_down  # another process sent it
    if not sender.to_zulip:
        report.logged.append(message.key)
        log.warning(f"ALERT ({message.kind}) to {sender.describe()}:\n{message.text}")
        return zulip_down
    delivery = sender.send(message.text)
    if delivery.ok:
        report.sent.append(message.key)
        log.info(f"alert {message.key} ({message.kind}) sent to {sender.describe()}")
        return zulip_down
    error = delivery.error or "unknown error"
    store.unclaim(message.key, message.kind, error)
    report.failed.append(message.key)
    log.warning(f"alert {message.key} ({message.kind}) not sent, tried again later: {error}\n{message.text}")
    return error if delivery.reply.is_systemic else zulip_down


__all__ = ["DEFAULT_TOPIC", "AlertReport", "AlertSender", "MessageKind", "raise_alerts"]
