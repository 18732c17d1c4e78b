"""What the rules remember per device and per place, as the stream's tables keep it (JSON).

>>> m = DeviceMemory.from_json({"r": {}, "wu": 1782864000000000, "wmm": ["m"]})
>>> DeviceMemory.from_json(m.to_json()) == m, m.watermark.isoformat()
(True, '2026-07-01T00:00:00+00:00')

A device's watermark is kept in microseconds since 1970 (``wu``, :mod:`cityvitals.instants`):
writing its ISO form at every reading took about 7,000 instructions. Memories written before
keep it in ISO form (``wm``) and are read as well; a worker of that earlier version, after a
rollback, finds no ``wm`` in the newer memories and judges the device's next reading as its
first, instead of failing on a number where it expects a string:

>>> DeviceMemory.from_json({"wm": "2026-07-01T00:00:00+00:00"}).watermark == m.watermark
True
>>> sorted(m.to_json())
['r', 'wmm', 'wu']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cityvitals.contracts import iso
from cityvitals.instants import from_micros, micros
from rules.alerting import AlertState

__all__ = ["DeviceMemory", "PlaceMemory"]


def _states_json(states: dict[str, AlertState]) -> dict[str, Any]:
    return {k: s.to_json() for k, s in states.items()}


def _states(data: dict[str, Any]) -> dict[str, AlertState]:
    return {k: AlertState.from_json(v) for k, v in data.get("r", {}).items()}


def _when(data: dict[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    return None if value is None else datetime.fromisoformat(value)


@dataclass(slots=True, init=False)
class DeviceMemory:
    """Everything the rules remember about one device: its watermark and each rule's state."""

    watermark: datetime | None
    rules: dict[str, AlertState]
    metrics: frozenset[str]
    """The metrics judged at the watermark's instant (another message of the same instant
    may bring others)."""

    def __init__(
        self,
        watermark: datetime | None = None,
        rules: dict[str, AlertState] | None = None,
        metrics: frozenset[str] = frozenset(),
    ) -> None:
        # Written out, as rules.engine.DeviceOutcome's: one is made per reading.
        self.watermark = watermark
        self.rules = {} if rules is None else rules
        self.metrics = metrics

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"r": _states_json(self.rules)}
        if self.watermark is not None:
            out["wu"] = micros(self.watermark)
            out["wmm"] = sorted(self.metrics)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> DeviceMemory:
        if not data:
            return cls()
        us = data.get("wu")
        watermark = _when(data, "wm") if us is None else from_micros(us)
        return cls(watermark, _states(data), frozenset(data.get("wmm", ())))


@dataclass(slots=True)
class PlaceMemory:
    """What place rules remember about one place: its clock and each rule's state."""

    place_path: tuple[str, ...] = ()
    clock: datetime | None = None
    rules: dict[str, AlertState] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pp": list(self.place_path), "r": _states_json(self.rules)}
        if self.clock is not None:
            out["t"] = iso(self.clock)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> PlaceMemory:
        if not data:
            return cls()
        return cls(tuple(data.get("pp", ())), _when(data, "t"), _states(data))
