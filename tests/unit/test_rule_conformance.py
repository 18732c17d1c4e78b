"""One conformance test for every rule kind: the same checks over a scenario that fires and
resolves. Memory round-trips through JSON (as the stream's tables keep it), a replayed input
changes nothing, the same inputs give the same alert ids, and memory stays bounded."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cityvitals.contracts import Alert, AlertStatus
from rules import (
    DeviceMemory,
    Observation,
    PlaceMemory,
    RuleSet,
    evaluate_device,
    evaluate_place,
    parse_rules,
    sweep_device,
    sweep_place,
)
from rules.ruleset import KINDS

T0 = datetime(2026, 7, 1, tzinfo=UTC)
PATH = ("c", "d1", "s1", "g1")


def o(device: str, metric: str, value: float, minutes: float) -> Observation:
    return Observation(device, "sensor", PATH, metric, value, T0 + timedelta(minutes=minutes))


Step = tuple[str, Any]  # ("read", [Observation, ...]) or ("tick", minutes)


@dataclass(frozen=True)
class Scenario:
    kind: str
    rules: str
    steps: list[Step]


def _wave(n: int) -> list[Step]:
    """A daily-looking wave sampled every 5 minutes, a spike, then the wave again."""
    steps: list[Step] = []
    for i in range(n):
        value = 50 + 10 * math.sin(2 * math.pi * i / 288) + (i * 7919 % 13) / 13
        if i == n - 40:
            value = 400.0
        steps.append(("read", [o("dev-1", "load", value, 5 * i)]))
    return steps


SCENARIOS = [
    Scenario(
        "threshold",
        "rules: [{id: r, metric: m, levels: {blue: 5, red: 20}, clear: 3,"
        " for: 2m, keep_firing_for: 2m}]",
        [("read", [o("dev-1", "m", v, i)]) for i, v in enumerate([1, 8, 9, 25, 10, 2, 2, 1, 1])],
    ),
    Scenario(
        "rate",
        "rules: [{id: r, kind: rate, metric: m, over: 10m, per: 1h, levels: {yellow: 30}}]",
        [
            ("read", [o("dev-1", "m", v, 5 * i)])
            for i, v in enumerate([0, 1, 2, 10, 20, 21, 21, 21])
        ],
    ),
    Scenario(
        "absence",
        "rules: [{id: r, kind: absence, metric: m, after: 10m}]",
        [
            ("read", [o("dev-1", "m", 1, 0)]),
            ("read", [o("dev-1", "other", 1, 5)]),
            ("tick", 12),
            ("tick", 13),
            ("read", [o("dev-1", "m", 1, 14)]),
            ("tick", 20),
        ],
    ),
    Scenario(
        "composite",
        "rules: [{id: r, kind: composite, group_by: grid, window: 10m, min_devices: 2,"
        " conditions: [{metric: rain, above: 20}, {metric: water, above: 10}]}]",
        [
            ("read", [o("rain-1", "rain", 30, 0)]),
            ("read", [o("wl-1", "water", 12, 3)]),
            ("read", [o("wl-1", "water", 13, 6)]),
            ("tick", 9),
            ("tick", 11),
            ("read", [o("rain-1", "rain", 25, 12)]),
            ("read", [o("wl-1", "water", 2, 13)]),
        ],
    ),
    Scenario(
        "anomaly",
        "rules: [{id: r, kind: anomaly, metric: load, levels: {yellow: 0.9}}]",
        _wave(600),
    ),
]


def test_every_rule_kind_has_a_scenario() -> None:
    assert sorted(s.kind for s in SCENARIOS) == sorted(KINDS)


@dataclass
class Run:
    """Drives one scenario: device memories by device, place memories by place."""

    rules: RuleSet
    through_json: bool = False
    devices: dict[str, DeviceMemory | None] | None = None
    places: dict[str, PlaceMemory | None] | None = None

    def __post_init__(self) -> None:
        self.devices, self.places = {}, {}

    def _device(self, device_id: str) -> DeviceMemory | None:
        assert self.devices is not None
        memory = self.devices.get(device_id)
        if self.through_json and memory is not None:
            memory = DeviceMemory.from_json(json.loads(json.dumps(memory.to_json())))
        return memory

    def _place(self, place_id: str) -> PlaceMemory | None:
        assert self.places is not None
        memory = self.places.get(place_id)
        if self.through_json and memory is not None:
            memory = PlaceMemory.from_json(json.loads(json.dumps(memory.to_json())))
        return memory

    def apply(self, step: Step) -> list[Alert]:
        assert self.devices is not None and self.places is not None
        what, arg = step
        alerts: list[Alert] = []
        if what == "tick":
            now = T0 + timedelta(minutes=arg)
            for device_id in list(self.devices):
                memory = self._device(device_id)
                if memory is not None:
                    subject = o(device_id, "m", 0, arg)
                    out = sweep_device(self.rules, memory, subject, now)
                    self.devices[device_id] = out.memory
                    alerts += out.alerts
            for place_id in list(self.places):
                current = self._place(place_id)
                if current is not None:
                    self.places[place_id], found = sweep_place(self.rules, current, now)
                    alerts += found
            return alerts
        device_id = arg[0].device_id
        out = evaluate_device(self.rules, self._device(device_id), arg)
        self.devices[device_id] = out.memory
        alerts += out.alerts
        for sent in out.for_places:
            place_id = sent.place_path[-1]
            self.places[place_id], found = evaluate_place(self.rules, self._place(place_id), sent)
            alerts += found
        return alerts

    def memory_json(self) -> str:
        assert self.devices is not None and self.places is not None
        return json.dumps(
            {
                "devices": {k: v.to_json() for k, v in self.devices.items() if v},
                "places": {k: v.to_json() for k, v in self.places.items() if v},
            },
            sort_keys=True,
        )


def run(
    scenario: Scenario, transform: Callable[[list[Step]], list[Step]] = list, **kw: Any
) -> tuple[list[Alert], Run]:
    driver = Run(parse_rules(scenario.rules, f"{scenario.kind}.yaml"), **kw)
    alerts: list[Alert] = []
    for step in transform(scenario.steps):
        alerts += driver.apply(step)
    return alerts, driver


def story(alerts: list[Alert]) -> list[tuple[str, int, str, str, datetime]]:
    return [(a.alert_id, a.revision, a.status.value, a.level.value, a.ts) for a in alerts]


@pytest.fixture(params=SCENARIOS, ids=lambda s: s.kind)
def scenario(request: pytest.FixtureRequest) -> Scenario:
    return request.param  # type: ignore[no-any-return]


def test_the_scenario_fires_and_resolves(scenario: Scenario) -> None:
    alerts, _ = run(scenario)
    statuses = [a.status for a in alerts]
    assert AlertStatus.FIRING in statuses and AlertStatus.RESOLVED in statuses
    assert statuses[0] is AlertStatus.FIRING and statuses[-1] is AlertStatus.RESOLVED


def test_memory_round_trips_through_json(scenario: Scenario) -> None:
    plain, a = run(scenario)
    through, b = run(scenario, through_json=True)
    assert story(through) == story(plain) and through == plain
    assert b.memory_json() == a.memory_json()


def test_a_replayed_input_changes_nothing(scenario: Scenario) -> None:
    once, a = run(scenario)
    twice, b = run(scenario, lambda steps: [s for step in steps for s in (step, step)])
    assert story(twice) == story(once)
    assert b.memory_json() == a.memory_json()


def test_replaying_the_whole_history_raises_nothing_new(scenario: Scenario) -> None:
    _, driver = run(scenario)
    again = [a for step in scenario.steps if step[0] == "read" for a in driver.apply(step)]
    assert again == []


def test_the_same_inputs_give_the_same_alerts(scenario: Scenario) -> None:
    assert story(run(scenario)[0]) == story(run(scenario)[0])


def test_memory_stays_bounded(scenario: Scenario) -> None:
    _, driver = run(scenario)
    assert len(driver.memory_json()) < 8_000
