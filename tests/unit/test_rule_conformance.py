"""One conformance test for every registered rule kind: the same checks over the kind's own
example, which fires and resolves (a kind added to rules.kinds.REGISTRY is covered as it is).
Memory round-trips through JSON (as the stream's tables keep it), a replayed input changes
nothing, the same inputs give the same alert ids, and memory stays bounded."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from pydantic import BaseModel

from cityvitals.contracts import Alert, AlertStatus
from rules.kinds import REGISTRY, RuleBase, RuleKind
from rules.ruleset import KINDS, parse_rules
from rules.testing import RuleRun

Step = tuple[Any, ...]  # ("read", device, metric, value, minute) or ("tick", minute)


def test_every_registered_kind_is_a_kind_of_the_rule_file() -> None:
    assert tuple(REGISTRY) == KINDS
    for name, kind in REGISTRY.items():
        assert kind.name == name and kind.role in ("reading", "silence", "place")
        assert issubclass(kind.spec, RuleBase) and issubclass(kind.spec, BaseModel)
        assert kind.spec.model_fields["kind"].default == name


def run(
    kind: RuleKind[Any], transform: Callable[[list[Step]], list[Step]] = list, **kw: Any
) -> tuple[list[Alert], RuleRun]:
    example = kind.example()
    driver = RuleRun(parse_rules(example.rules, f"{kind.name}.yaml"), **kw)
    for step in transform(list(example.steps)):
        driver.step(step)
    return driver.alerts, driver


def story(alerts: list[Alert]) -> list[tuple[str, int, str, str, datetime]]:
    return [(a.alert_id, a.revision, a.status.value, a.level.value, a.ts) for a in alerts]


@pytest.fixture(params=list(REGISTRY.values()), ids=list(REGISTRY))
def scenario(request: pytest.FixtureRequest) -> RuleKind[Any]:
    """Every registered rule kind, driven through its own example."""
    return request.param  # type: ignore[no-any-return]


def test_the_scenario_fires_and_resolves(scenario: RuleKind[Any]) -> None:
    alerts, _ = run(scenario)
    statuses = [a.status for a in alerts]
    assert AlertStatus.FIRING in statuses and AlertStatus.RESOLVED in statuses
    assert statuses[0] is AlertStatus.FIRING and statuses[-1] is AlertStatus.RESOLVED


def test_memory_round_trips_through_json(scenario: RuleKind[Any]) -> None:
    plain, a = run(scenario)
    through, b = run(scenario, through_json=True)
    assert story(through) == story(plain) and through == plain
    assert b.memory_json() == a.memory_json()


def test_a_replayed_input_changes_nothing(scenario: RuleKind[Any]) -> None:
    once, a = run(scenario)
    twice, b = run(scenario, lambda steps: [s for step in steps for s in (step, step)])
    assert story(twice) == story(once)
    assert b.memory_json() == a.memory_json()


def test_replaying_the_whole_history_raises_nothing_new(scenario: RuleKind[Any]) -> None:
    _, driver = run(scenario)
    steps = scenario.example().steps
    again = [a for step in steps if step[0] == "read" for a in driver.step(step)]
    assert again == []


def test_the_same_inputs_give_the_same_alerts(scenario: RuleKind[Any]) -> None:
    assert story(run(scenario)[0]) == story(run(scenario)[0])


def test_memory_stays_bounded(scenario: RuleKind[Any]) -> None:
    _, driver = run(scenario)
    assert len(driver.memory_json()) < 8_000
