"""The simulated city's incidents: how each kind unfolds, and which of a grid's sensors it
moves. Pure: an incident's strength is a function of the time since the simulator started."""

from __future__ import annotations

from dataclasses import dataclass

from cityvitals.contracts import Device

__all__ = [
    "FLOOD_PEAK_CM",
    "INCIDENTS",
    "INCIDENT_AFTER_S",
    "INCIDENT_SPACING_S",
    "SHAPES",
    "Incident",
    "IncidentSpecError",
    "Shape",
]

INCIDENTS = ("flood", "smog", "fire", "congestion", "gas")


@dataclass(frozen=True)
class Shape:
    """How an incident kind unfolds: seconds to build up, to hold at its worst, to ease off."""

    rise: float
    hold: float
    fall: float

    @property
    def duration(self) -> float:
        return self.rise + self.hold + self.fall


SHAPES = {
    # Water rises 2.25 cm/min for 20 min to 45 cm: past every depth level, still rising when
    # the rate rule has the 7.5 minutes of readings it needs to judge a rate over 15 minutes.
    "flood": Shape(rise=20 * 60, hold=5 * 60, fall=10 * 60),
    "smog": Shape(rise=2 * 60, hold=6 * 60, fall=2 * 60),
    # The camera's smoke score and the grid's gas sensor rise together (the composite rule
    # wants them within 5 minutes of each other).
    "fire": Shape(rise=60, hold=4 * 60, fall=60),
    # Congestion must hold 5 minutes before its rule fires.
    "congestion": Shape(rise=2 * 60, hold=8 * 60, fall=2 * 60),
    "gas": Shape(rise=60, hold=3 * 60, fall=60),
}
"""Each incident kind's course, long enough for the rules of ``rules/default.yaml`` that
watch it."""

_AFFECTS: dict[str, dict[str, float]] = {
    "flood": {"water_level": 1.0},
    "smog": {"air_quality": 1.0},
    "fire": {"camera": 1.0, "gas": 0.45},  # a fire's combustible gases: ~19 %LEL at worst
    "congestion": {"traffic": 1.0},
    "gas": {"gas": 1.0},
}
"""The device types of its grid an incident kind moves, and how strongly."""


@dataclass(frozen=True)
class Incident:
    """An injected problem: ``kind`` at the grid ``place_id``, from ``start`` s after the
    simulator starts (negative: it began that long before), following the kind's
    :data:`SHAPES`."""

    kind: str
    place_id: str
    start: float

    @property
    def shape(self) -> Shape:
        return SHAPES[self.kind]

    @property
    def duration(self) -> float:
        return self.shape.duration

    def strength(self, elapsed: float) -> float:
        """0 → 1 → 0: rises linearly, holds at 1, falls linearly."""
        t, shape = elapsed - self.start, self.shape
        if t <= 0 or t >= shape.duration:
            return 0.0
        if t < shape.rise:
            return t / shape.rise
        if t <= shape.rise + shape.hold:
            return 1.0
        return (shape.duration - t) / shape.fall

    def strength_for(self, device: Device, elapsed: float) -> float:
        """The incident's strength as ``device`` sees it (0 outside its grid or kind)."""
        weight = _AFFECTS[self.kind].get(device.device_type, 0.0)
        if not weight or self.place_id not in device.place_path:
            return 0.0
        return weight * self.strength(elapsed)


FLOOD_PEAK_CM = 45.0
"""How deep a flood's water stands at its worst: past the red waterlogging level (40 cm)."""
INCIDENT_AFTER_S = 20.0
"""Seconds from the simulator's start to the first incident (``up --incident-after``)."""
INCIDENT_SPACING_S = 30.0
"""Seconds between the starts of successive incidents of one run."""


class IncidentSpecError(ValueError):
    """An ``--incident KIND[@GRID]`` that names no incident kind or no grid of the city."""

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(f"--incident {spec!r}: {reason}")
        self.spec = spec
        self.reason = reason
