"""Notification rules: validation (one line naming rule and field) and first-match-wins matching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lms_activity_pipeline.domain.rules import EventFacts, RulesError, failures_in_row, parse_rules
from lms_activity_pipeline.errors import ConfigError
from lms_activity_pipeline.settings import read_rules

pytestmark = pytest.mark.unit

EXAMPLE = """
rules:
  - name: second failure is urgent
    when: {event_types: [exam_failed], min_failures_in_row: 2}
    urgent: true
  - name: no content starts
    when: {event_types: [content_started]}
    notify: false
  - name: low scores in course 7 are urgent
    when: {courses: [7], max_score_pct: 40}
    urgent: true
  - name: nothing else from activity 99
    when: {activities: [99]}
    notify: false
"""


def test_first_match_wins() -> None:
    rules = parse_rules(yaml.safe_load(EXAMPLE))
    assert len(rules.rules) == 4 and rules.needs_failures

    def name(facts: EventFacts) -> str | None:
        rule = rules.match(facts)
        return None if rule is None else rule.name

    assert name(EventFacts("exam_failed", failures_in_row=1)) is None
    assert name(EventFacts("exam_failed", failures_in_row=2)) == "second failure is urgent"
    assert name(EventFacts("exam_failed", course_id=7, score_pct=30, failures_in_row=3)) == "second failure is urgent"
    assert name(EventFacts("exam_failed", course_id=7, score_pct=30, failures_in_row=1)) == (
        "low scores in course 7 are urgent"
    )
    assert name(EventFacts("exam_passed", course_id=7, score_pct=41)) is None
    assert name(EventFacts("exam_started", course_id=7)) is None  # no score: a score condition does not match
    assert name(EventFacts("content_started", activity_id=99)) == "no content starts"
    assert name(EventFacts("content_watched", activity_id=99)) == "nothing else from activity 99"
    skip = rules.match(EventFacts("content_started"))
    assert skip is not None and not skip.notify and skip.skip_reason == "rule 'no content starts': notify: false"
    assert (
        rules.describe()[0]
        == "1. second failure is urgent: event_types=exam_failed and min_failures_in_row=2 -> urgent"
    )


def test_min_score_and_no_rules() -> None:
    rules = parse_rules({"rules": [{"name": "good", "when": {"min_score_pct": 90}, "notify": False}]})
    assert rules.match(EventFacts("exam_passed", score_pct=95)) is not None
    assert rules.match(EventFacts("exam_passed", score_pct=89.9)) is None
    assert not parse_rules(None) and not parse_rules({"rules": []})


def test_failures_in_row_counts_the_trailing_failures() -> None:
    assert failures_in_row(["exam_failed", "exam_passed", "exam_failed", "exam_failed"]) == 2
    assert failures_in_row(["exam_failed", "exam_passed"]) == 0
    assert failures_in_row([]) == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1], "the file must be a mapping with a 'rules' list"),
        ({"rule": []}, "unknown top-level key 'rule' (only 'rules')"),
        ({"rules": {"a": 1}}, "'rules' must be a list"),
        ({"rules": [{"when": {}}]}, "rule 1: field 'name': must be a non-empty text"),
        ({"rules": [{"name": "x", "urgent": "yes"}]}, "rule 1 ('x'): field 'urgent': must be true or false, got 'yes'"),
        ({"rules": [{"name": "x", "colour": 1}]}, "rule 1 ('x'): unknown field 'colour'"),
        ({"rules": [{"name": "x", "when": {"event_type": []}}]}, "rule 1 ('x'): unknown field 'when.event_type'"),
        (
            {"rules": [{"name": "x", "when": {"event_types": "exam_failed"}}]},
            "field 'when.event_types': must be a list",
        ),
        ({"rules": [{"name": "x", "when": {"event_types": ["exam_flunked"]}}]}, "unknown event type 'exam_flunked'"),
        ({"rules": [{"name": "x", "when": {"courses": ["7"]}}]}, "field 'when.courses': '7' is not a int"),
        ({"rules": [{"name": "x", "when": {"min_score_pct": 101}}]}, "'when.min_score_pct': must be a number from 0"),
        ({"rules": [{"name": "x", "when": {"min_failures_in_row": 0}}]}, "'when.min_failures_in_row': must be a whole"),
        (
            {"rules": [{"name": "x", "urgent": True, "notify": False}]},
            "field 'urgent': urgent: true with notify: false",
        ),
        ({"rules": [{"name": "x"}, {"name": "x"}]}, "rule 2 ('x'): field 'name': the name is used by rule 1"),
    ],
)
def test_bad_rules_name_the_rule_and_the_field(data: Any, message: str) -> None:
    with pytest.raises(RulesError) as info:
        parse_rules(data)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_the_file_unreadable_or_not_yaml_is_one_line(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"^LMS_NOTIFY_RULES='.*absent.yaml': cannot read the rules file"):
        read_rules("LMS_NOTIFY_RULES", str(tmp_path / "absent.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        read_rules("LMS_NOTIFY_RULES", str(bad))
    assert "not valid YAML at line" in str(info.value) and "\n" not in str(info.value)
    good = tmp_path / "good.yaml"
    good.write_text(EXAMPLE)
    assert len(read_rules("LMS_NOTIFY_RULES", str(good)).rules) == 4


def test_the_example_rules_file_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "notify_rules.yaml"
    rules = read_rules("LMS_NOTIFY_RULES", str(example))
    assert len(rules.rules) == 4 and rules.rules[0].name == "second failure is urgent"
    low = rules.match(EventFacts("exam_failed", score_pct=10, failures_in_row=1))
    assert low is not None and low.name == "very low scores are urgent" and low.urgent


def test_the_notify_runs_column_wise_matching_agrees_with_rule_matches() -> None:
    """A notify run applies rules to whole columns (``notify/policy.py``): same answers as :meth:`Rule.matches`."""
    import random

    import pandas as pd

    from lms_activity_pipeline.notify.policy import _matches

    rng = random.Random(3)
    types = ["exam_failed", "exam_passed", "content_started", "content_watched"]
    facts = [
        EventFacts(
            rng.choice(types),
            rng.choice([None, 3, 7]),
            rng.choice([None, 99, 5]),
            rng.choice([None, 10.0, 20.0, 55.5, 90.0]),
            rng.randint(0, 3),
        )
        for _ in range(300)
    ]
    frame = pd.DataFrame(
        {
            "event_type": [f.event_type for f in facts],
            "course_id": pd.array([f.course_id for f in facts], dtype="Int64"),
            "activity_id": pd.array([f.activity_id for f in facts], dtype="Int64"),
            "score_pct": [f.score_pct for f in facts],
            "failures_in_row": [f.failures_in_row for f in facts],
        }
    )
    extra = parse_rules({"rules": [{"name": "m", "when": {"min_score_pct": 50, "activities": [99]}, "notify": False}]})
    for rule in parse_rules(yaml.safe_load(EXAMPLE)).rules + extra.rules:
        assert _matches(rule, frame).tolist() == [rule.matches(f) for f in facts], rule.name
