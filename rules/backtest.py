"""Replay history through a rule set, exactly as the stream judges it, in one process.

Readings are taken in the order given (their arrival order): a reading not newer than its
device's newest is out of order or late, as in the stream. The clock is event time: every
``tick`` of it, silence is judged (absence rules, composite windows) as the stream's clock
ticks would; the stream ticks in wall-clock time, so around a backlog the two may differ.
There is no wall clock here to refuse a reading from the future: it moves its device's
watermark, as it would in a stream whose clock were that far ahead.

>>> from datetime import UTC, datetime, timedelta
>>> from rules.engine import Observation
>>> from rules.ruleset import parse_rules
>>> bt = Backtest(parse_rules("rules: [{id: deep, metric: cm, levels: {red: 10}}]"))
>>> t = datetime(2026, 7, 1, tzinfo=UTC)
>>> def reading(minutes, value):
...     return [Observation("wl", None, ("c",), "cm", value, t + timedelta(minutes=minutes))]
>>> [a.status.value for i, v in enumerate((1, 12, 3)) for a in bt.feed(reading(i, v))]
['firing', 'resolved']
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from cityvitals.contracts import Alert
from rules.engine import (
    Arrival,
    DeviceMemory,
    Observation,
    PlaceMemory,
    evaluate_device,
    evaluate_place,
    sweep_device,
    sweep_place,
)
from rules.ruleset import RuleSet

__all__ = ["MAX_TICKS", "Backtest", "BacktestCounts"]

MAX_TICKS = 1000
"""Across a longer gap in the history the clock jumps, with one sweep at its end."""


@dataclass
class BacktestCounts:
    readings: int = 0
    evaluations: int = 0
    transitions: int = 0
    out_of_order: int = 0
    late: int = 0
    ticks: int = 0


@dataclass
class Backtest:
    rules: RuleSet
    tick: timedelta = timedelta(minutes=1)
    counts: BacktestCounts = field(default_factory=BacktestCounts)
    devices: dict[str, DeviceMemory] = field(default_factory=dict)
    places: dict[str, PlaceMemory] = field(default_factory=dict)
    _subjects: dict[str, Observation] = field(default_factory=dict)
    _next_tick: datetime | None = None

    @property
    def _sweeps(self) -> bool:
        return bool(self.rules.absence) or any(True for _ in self.places)

    def feed(self, reading: list[Observation]) -> list[Alert]:
        """One reading: its observations share a device and an instant."""
        if not reading:
            return []
        alerts = self.advance(reading[0].ts)
        first = reading[0]
        out = evaluate_device(self.rules, self.devices.get(first.device_id), reading)
        self.counts.readings += 1
        self.counts.evaluations += out.evaluations
        if out.arrival is Arrival.LATE:
            self.counts.late += 1
            return alerts
        if out.arrival is Arrival.OUT_OF_ORDER:
            self.counts.out_of_order += 1
            return alerts
        self.devices[first.device_id] = out.memory
        self._subjects[first.device_id] = first
        new = list(out.alerts)
        for sent in out.for_places:
            place = sent.place_path[-1]
            self.places[place], found = evaluate_place(self.rules, self.places.get(place), sent)
            self.counts.evaluations += 1
            new += found
        self.counts.transitions += len(new)
        return alerts + new

    def advance(self, now: datetime) -> list[Alert]:
        """Run every clock tick up to ``now`` (event time)."""
        if self._next_tick is None:
            self._next_tick = now + self.tick
            return []
        alerts: list[Alert] = []
        if (now - self._next_tick) / self.tick > MAX_TICKS:  # a gap in the history: one sweep
            self._next_tick = now - (now - self._next_tick) % self.tick
        while self._next_tick <= now:
            if self._sweeps:
                alerts += self._sweep(self._next_tick)
            self._next_tick += self.tick
        self.counts.transitions += len(alerts)
        return alerts

    def _sweep(self, now: datetime) -> list[Alert]:
        self.counts.ticks += 1
        alerts: list[Alert] = []
        if self.rules.absence:
            for device_id, memory in self.devices.items():
                subject = replace(self._subjects[device_id], ts=now)
                out = sweep_device(self.rules, memory, subject, now)
                self.devices[device_id] = out.memory
                self.counts.evaluations += out.evaluations
                alerts += out.alerts
        for place, place_memory in self.places.items():
            self.places[place], found = sweep_place(self.rules, place_memory, now)
            alerts += found
        return alerts
