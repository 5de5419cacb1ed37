"""Notification rules (``LMS_NOTIFY_RULES``): an ordered list, the first rule that matches an event decides.

Pure Python: :func:`parse_rules` validates what the YAML file held (a loaded object, not the text) and
:meth:`RuleSet.match` finds the rule for one event. A rule says ``notify: false`` (the pair is skipped,
the reason names the rule) or ``urgent: true`` (sent at once whatever the mentor's frequency, quiet
hours or snooze, and marked urgent); ``notify: true`` alone stops the search and notifies normally.

Conditions, all optional and combined with AND: ``event_types``, ``courses``, ``activities``,
``min_score_pct``, ``max_score_pct``, ``min_failures_in_row`` (consecutive failed attempts of the same
exam by the student, this one included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lms_activity_pipeline.domain.event_types import ALL_EVENT_TYPES

RULE_KEYS = ("name", "when", "notify", "urgent")
CONDITION_KEYS = ("event_types", "courses", "activities", "min_score_pct", "max_score_pct", "min_failures_in_row")


class RulesError(ValueError):
    """The rules cannot be used; the message is one line naming the rule and the field."""


@dataclass(frozen=True)
class EventFacts:
    """What a rule can look at for one event."""

    event_type: str
    course_id: int | None = None
    activity_id: int | None = None
    score_pct: float | None = None
    #: Consecutive failed attempts of this exam by the student up to this event (0 when not a failure).
    failures_in_row: int = 0


@dataclass(frozen=True)
class Rule:
    name: str
    notify: bool = True
    urgent: bool = False
    event_types: frozenset[str] | None = None
    courses: frozenset[int] | None = None
    activities: frozenset[int] | None = None
    min_score_pct: float | None = None
    max_score_pct: float | None = None
    min_failures_in_row: int | None = None

    def matches(self, event: EventFacts) -> bool:
        if self.event_types is not None and event.event_type not in self.event_types:
            return False
        if self.courses is not None and event.course_id not in self.courses:
            return False
        if self.activities is not None and event.activity_id not in self.activities:
            return False
        if self.min_score_pct is not None and (event.score_pct is None or event.score_pct < self.min_score_pct):
            return False
        if self.max_score_pct is not None and (event.score_pct is None or event.score_pct > self.max_score_pct):
            return False
        return self.min_failures_in_row is None or event.failures_in_row >= self.min_failures_in_row

    @property
    def skip_reason(self) -> str:
        return f"rule '{self.name}': notify: false"

    def describe(self) -> str:
        conditions = []
        for key in CONDITION_KEYS:
            value = getattr(self, key)
            if value is not None:
                shown = ",".join(str(v) for v in sorted(value)) if isinstance(value, frozenset) else f"{value:g}"
                conditions.append(f"{key}={shown}")
        effect = "skip" if not self.notify else "urgent" if self.urgent else "notify"
        return f"{self.name}: {' and '.join(conditions) or 'every event'} -> {effect}"


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rules)

    def match(self, event: EventFacts) -> Rule | None:
        """The first rule matching ``event`` (``None``: notify normally)."""
        return next((rule for rule in self.rules if rule.matches(event)), None)

    @property
    def needs_failures(self) -> bool:
        return any(r.min_failures_in_row is not None for r in self.rules)

    def describe(self) -> list[str]:
        return [f"{i}. {rule.describe()}" for i, rule in enumerate(self.rules, 1)]


def parse_rules(data: Any) -> RuleSet:
    """Validate a loaded rules document (``{"rules": [...]}``); :class:`RulesError` names rule and field."""
    if data is None:
        return RuleSet()
    if not isinstance(data, Mapping):
        raise RulesError("the file must be a mapping with a 'rules' list")
    unknown = sorted(str(k) for k in data if k != "rules")
    if unknown:
        raise RulesError(f"unknown top-level key {unknown[0]!r} (only 'rules')")
    items = data.get("rules") or []
    if not isinstance(items, list):
        raise RulesError("'rules' must be a list")
    rules = tuple(_rule(index, item) for index, item in enumerate(items, 1))
    names = [r.name for r in rules]
    for index, name in enumerate(names, 1):
        if names.index(name) != index - 1:
            raise RulesError(f"rule {index} ({name!r}): field 'name': the name is used by rule {names.index(name) + 1}")
    return RuleSet(rules)


def _rule(index: int, item: Any) -> Rule:
    where = f"rule {index}"
    if not isinstance(item, Mapping):
        raise RulesError(f"{where}: must be a mapping with name, when and notify or urgent")
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RulesError(f"{where}: field 'name': must be a non-empty text")
    where = f"rule {index} ({name!r})"
    for key in item:
        if key not in RULE_KEYS:
            raise RulesError(f"{where}: unknown field {str(key)!r} (known: {', '.join(RULE_KEYS)})")
    notify = _bool(where, "notify", item.get("notify", True))
    urgent = _bool(where, "urgent", item.get("urgent", False))
    if urgent and not notify:
        raise RulesError(f"{where}: field 'urgent': urgent: true with notify: false cannot both apply")
    when = item.get("when") or {}
    if not isinstance(when, Mapping):
        raise RulesError(f"{where}: field 'when': must be a mapping of conditions")
    for key in when:
        if key not in CONDITION_KEYS:
            raise RulesError(f"{where}: unknown field 'when.{key}' (known: {', '.join(CONDITION_KEYS)})")
    event_types = _list(where, "event_types", when.get("event_types"), str)
    if event_types is not None and (bad := sorted(set(event_types) - set(ALL_EVENT_TYPES))):
        raise RulesError(f"{where}: field 'when.event_types': unknown event type {bad[0]!r}")
    minimum, maximum = _pct(where, "min_score_pct", when), _pct(where, "max_score_pct", when)
    failures = when.get("min_failures_in_row")
    if failures is not None and (isinstance(failures, bool) or not isinstance(failures, int) or failures < 1):
        raise RulesError(f"{where}: field 'when.min_failures_in_row': must be a whole number >= 1")
    return Rule(
        name=name.strip(),
        notify=notify,
        urgent=urgent,
        event_types=None if event_types is None else frozenset(event_types),
        courses=_ids(where, "courses", when.get("courses")),
        activities=_ids(where, "activities", when.get("activities")),
        min_score_pct=minimum,
        max_score_pct=maximum,
        min_failures_in_row=failures,
    )


def _bool(where: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise RulesError(f"{where}: field {key!r}: must be true or false, got {value!r}")
    return value


def _list(where: str, key: str, value: Any, kind: type) -> list[Any] | None:
    if value is None:
        return None
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise RulesError(f"{where}: field 'when.{key}': must be a list")
    for item in value:
        if not isinstance(item, kind) or isinstance(item, bool):
            raise RulesError(f"{where}: field 'when.{key}': {item!r} is not a {kind.__name__}")
    return list(value)


def _ids(where: str, key: str, value: Any) -> frozenset[int] | None:
    items = _list(where, key, value, int)
    return None if items is None else frozenset(items)


def _pct(where: str, key: str, when: Mapping[str, Any]) -> float | None:
    value = when.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise RulesError(f"{where}: field 'when.{key}': must be a number from 0 to 100")
    return float(value)


def failures_in_row(outcomes: Sequence[str]) -> int:
    """Consecutive ``exam_failed`` at the end of one student's outcomes on one exam (oldest first)."""
    count = 0
    for outcome in reversed(outcomes):
        if outcome != "exam_failed":
            break
        count += 1
    return count
