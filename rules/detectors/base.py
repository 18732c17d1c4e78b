"""The interface of an anomaly detector: river's ``learn_one`` / ``score_one``, one series each.

A detector scores a point against what it learned *before* it (0.0 while warming up), scores
in [0, 1], is deterministic, keeps a bounded state and gives it as plain JSON types (the stream
keeps it in a table); its constructor takes that JSON back (None for a new series).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

__all__ = ["Detector", "DetectorFactory", "Point"]

Point = tuple[datetime, float]
"""One reading of a series: its UTC-aware time and value."""


class Detector(Protocol):
    def learn_one(self, x: Point) -> None:
        """Learn the point (a point not newer than the last learned one changes nothing)."""

    def score_one(self, x: Point) -> float:
        """The point's score in [0, 1], without learning it."""

    def to_json(self) -> Any:
        """The state as plain JSON types (None before the first point)."""


class DetectorFactory(Protocol):
    def __call__(self, state: Any = None) -> Detector:
        """A detector with default parameters, restored from ``state`` (None: a new one)."""
