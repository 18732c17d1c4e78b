"""Replay history through a rule set, exactly as the stream judges it, in one process.

Readings are taken in the order given (their arrival order): a reading not newer than its
device's newest is out of order or late, as in the stream. The clock is event time: every
``tick`` (the stream's tick interval) every device and place is swept as the stream's clock
ticks sweep them: absence rules, ``expires_after``, ``for`` and ``keep_firing_for`` running
out on the last value, stale values, composite windows (judged ``grace`` behind the tick, as
the stream does). :meth:`Backtest.finish` runs the clock on past the last reading, so silence
at the end of the input is judged too. The stream ticks in wall-clock time, so around a
backlog the two may differ. There is no wall clock here to refuse a reading from the
future: it moves its device's watermark, as it would in a stream whose clock were that far
ahead.

>>> from datetime import UTC, datetime, timedelta
>>> from rules.engine import Observation
>>> from rules.ruleset import parse_rules
>>> bt = Backtest(parse_rules("rules: [{id: deep, metric: cm, levels: {red: 10}}]"))
>>> t = datetime(2026, 7, 1, tzinfo=UTC)
>>> def reading(minutes, value):
...     return [Observation("wl", None, ("c",), "cm", value, t + timedelta(minutes=minutes))]
>>> [a.status.value for i, v in enumerate((1, 12, 3)) for a in bt.feed(reading(i, v))]
['firing', 'resolved']
>>> [a.status.value for a in bt.feed(reading(3, 11))]  # then silence: stale after 20 minutes
['firing']
>>> [(a.status.value, a.resolution.value, a.ts - t) for a in bt.finish()]
[('resolved', 'stale', datetime.timedelta(seconds=1380))]
"""

from __future__ import annotations

from dataclasses import dataclass, field
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

__all__ = ["DEFAULT_TICK", "MAX_TICKS", "Backtest", "BacktestCounts"]

DEFAULT_TICK = timedelta(seconds=10)
"""The stream's default tick (``CITYVITALS_RULES_TICK_S``)."""
MAX_TICKS = 100_000
"""Across a longer gap in the history (11.5 days at 10 s) the clock jumps, with one sweep at
its end; below that every tick is run."""


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
    tick: timedelta = DEFAULT_TICK
    counts: BacktestCounts = field(default_factory=BacktestCounts)
    devices: dict[str, DeviceMemory] = field(default_factory=dict)
    places: dict[str, PlaceMemory] = field(default_factory=dict)
    _subjects: dict[str, Observation] = field(default_factory=dict)
    _next_tick: datetime | None = None
    _last: datetime | None = None

    def feed(self, reading: list[Observation]) -> list[Alert]:
        """One reading: its observations share a device and an instant."""
        if not reading:
            return []
        alerts = self.advance(reading[0].ts)
        first = reading[0]
        self._last = first.ts if self._last is None else max(self._last, first.ts)
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
        if (now - self._next_tick) / self.tick > MAX_TICKS:  # a long gap: one sweep at its end
            self._next_tick = now - (now - self._next_tick) % self.tick
        while self._next_tick <= now:
            alerts += self._sweep(self._next_tick)
            self._next_tick += self.tick
        self.counts.transitions += len(alerts)
        return alerts

    def horizon(self) -> datetime | None:
        """The last reading plus the longest any rule can take to act on it (for the
        devices' longest expected interval): where the clock stops by default."""
        if self._last is None:
            return None
        intervals = {s.expected_interval_s for s in self._subjects.values()} or {None}
        longest = max(self.rules.horizon(i) for i in intervals)
        return self._last + longest + self.tick

    def finish(self, until: datetime | None = None) -> list[Alert]:
        """Run the clock on past the last reading: to ``until``, or by default to
        :meth:`horizon`, so the silence after the last reading is judged as the stream
        would judge it."""
        end = until if until is not None else self.horizon()
        return [] if end is None else self.advance(end)

    def _sweep(self, now: datetime) -> list[Alert]:
        self.counts.ticks += 1
        alerts: list[Alert] = []
        for device_id, memory in self.devices.items():
            subject = self._subjects[device_id]._replace(ts=now)
            out = sweep_device(self.rules, memory, subject, now)
            self.devices[device_id] = out.memory
            self.counts.evaluations += out.evaluations
            alerts += out.alerts
        behind = now - self.rules.grace  # as the stream: readings on their way still count
        for place, place_memory in self.places.items():
            self.places[place], found = sweep_place(self.rules, place_memory, behind)
            alerts += found
        return alerts
