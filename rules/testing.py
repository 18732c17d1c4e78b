"""Public helpers to test a rule, a rule kind or a detector in a few lines (no I/O).

>>> alerts = transitions("rules: [{id: hot, metric: m, levels: {yellow: 30}}]",
...                      [(0, 20.0), (5, 35.0), (10, 25.0)])
>>> story(alerts)
[(5.0, 'firing', 'yellow'), (10.0, 'resolved', 'yellow')]
>>> from rules.detectors import DETECTORS
>>> scores = score_series(DETECTORS["seasonal"](), [(i * 5, 20.0 + i % 3) for i in range(200)])
>>> scores[0], all(0.0 <= s <= 1.0 for s in scores)
(0.0, True)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cityvitals.contracts import Alert, Reading
from rules.detectors.base import Detector
from rules.engine import evaluate_device, evaluate_place, sweep_device, sweep_place
from rules.memory import DeviceMemory, PlaceMemory
from rules.observation import Observation
from rules.ruleset import RuleSet, parse_rules

__all__ = [
    "PATH",
    "T0",
    "RuleRun",
    "When",
    "observation",
    "reading",
    "score_series",
    "story",
    "transitions",
]

T0 = datetime(2026, 7, 1, tzinfo=UTC)
"""The instant that times given in minutes count from."""
PATH = ("c", "d1", "s1", "g1")
"""A place path down to a grid: city, district, street, grid."""
When = datetime | float
"""An instant, or minutes after :data:`T0`."""


def _at(when: When) -> datetime:
    return when if isinstance(when, datetime) else T0 + timedelta(minutes=when)


def observation(
    value: float,
    when: When = 0.0,
    *,
    device_id: str = "dev-1",
    metric: str = "m",
    device_type: str | None = "sensor",
    place_path: tuple[str, ...] = PATH,
    **kw: Any,
) -> Observation:
    """One observation; other :class:`Observation` fields by keyword."""
    return Observation(device_id, device_type, place_path, metric, value, _at(when), **kw)


def reading(
    values: dict[str, float], when: When = 0.0, *, device_id: str = "dev-1", **kw: Any
) -> Reading:
    """A :class:`Reading` message as the stream receives it (``seq`` 1 unless given).

    >>> reading({"m": 1.0}).values
    {'m': 1.0}
    """
    fields: dict[str, Any] = {"seq": 1, "device_type": "sensor", "place_path": PATH, **kw}
    return Reading(device_id=device_id, ts=_at(when), values=values, **fields)


@dataclass
class RuleRun:
    """Drives a rule set as the stream does: device memories by device, place memories by
    place; ``through_json`` passes every memory through JSON between steps, as the tables do."""

    rules: RuleSet
    through_json: bool = False
    devices: dict[str, DeviceMemory] = field(default_factory=dict)
    places: dict[str, PlaceMemory] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)

    def _device(self, device_id: str) -> DeviceMemory | None:
        memory = self.devices.get(device_id)
        if self.through_json and memory is not None:
            memory = DeviceMemory.from_json(json.loads(json.dumps(memory.to_json())))
        return memory

    def _place(self, place_id: str) -> PlaceMemory | None:
        memory = self.places.get(place_id)
        if self.through_json and memory is not None:
            memory = PlaceMemory.from_json(json.loads(json.dumps(memory.to_json())))
        return memory

    def read(self, observed: list[Observation]) -> list[Alert]:
        """Judge one reading (observations of one device at one instant) and its places."""
        device_id = observed[0].device_id
        out = evaluate_device(self.rules, self._device(device_id), observed)
        self.devices[device_id] = out.memory
        found = list(out.alerts)
        for sent in out.for_places:
            place_id = sent.place_path[-1]
            self.places[place_id], at_place = evaluate_place(
                self.rules, self._place(place_id), sent
            )
            found += at_place
        self.alerts += found
        return found

    def tick(self, when: When) -> list[Alert]:
        """A clock tick of the stream over every device and place met so far."""
        now, found = _at(when), []
        for device_id in list(self.devices):
            memory = self._device(device_id)
            if memory is not None:
                out = sweep_device(
                    self.rules, memory, observation(0.0, now, device_id=device_id), now
                )
                self.devices[device_id] = out.memory
                found += out.alerts
        for place_id in list(self.places):
            current = self._place(place_id)
            if current is not None:
                self.places[place_id], at_place = sweep_place(self.rules, current, now)
                found += at_place
        self.alerts += found
        return found

    def step(self, step: tuple[Any, ...]) -> list[Alert]:
        """``("read", device, metric, value, when)`` or ``("tick", when)``, as a kind's
        :class:`~rules.kinds.Example` gives them."""
        if step[0] == "tick":
            return self.tick(step[1])
        _, device_id, metric, value, when = step
        return self.read([observation(value, when, device_id=device_id, metric=metric)])

    def memory_json(self) -> str:
        """Every memory as one JSON text (to compare runs, or weigh the memory)."""
        return json.dumps(
            {
                "devices": {k: v.to_json() for k, v in self.devices.items()},
                "places": {k: v.to_json() for k, v in self.places.items()},
            },
            sort_keys=True,
        )


def transitions(
    rules: str | RuleSet,
    series: Iterable[tuple[When, float]],
    *,
    metric: str = "m",
    device_id: str = "dev-1",
) -> list[Alert]:
    """The alerts a rule file raises over one device's series of (time, value)."""
    run = RuleRun(parse_rules(rules) if isinstance(rules, str) else rules)
    for when, value in series:
        run.read([observation(value, when, device_id=device_id, metric=metric)])
    return run.alerts


def story(alerts: Iterable[Alert]) -> list[tuple[float, str, str]]:
    """Each alert as (minutes after :data:`T0`, status, level)."""
    return [((a.ts - T0) / timedelta(minutes=1), a.status.value, a.level.value) for a in alerts]


def score_series(detector: Detector, series: Iterable[tuple[When, float]]) -> list[float]:
    """Score then learn each (time, value) of a series, as the stream does; the scores."""
    scores = []
    for when, value in series:
        x = (_at(when), value)
        scores.append(detector.score_one(x))
        detector.learn_one(x)
    return scores
