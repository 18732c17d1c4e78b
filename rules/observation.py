"""What the rules judge: one value of one metric of one device at one instant.

>>> from datetime import UTC, datetime
>>> from cityvitals.contracts import Reading
>>> r = Reading(device_id="wl-1", seq=1, device_type="water_level", place_path=("c", "d1"),
...             ts=datetime(2026, 7, 1, tzinfo=UTC), values={"water_cm": 18.0})
>>> [(o.metric, o.value) for o in observations(r)]
[('water_cm', 18.0)]
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

from cityvitals.contracts import CameraEvent, Reading

__all__ = ["Observation", "observations"]


class Observation(NamedTuple):
    """One value of one metric of one device at one instant, as the rules see it.

    A reading with several values gives several observations; a camera event gives one, whose
    metric is ``camera.<event type>`` and whose confidence is the analytics' confidence.
    A named tuple (``_replace`` makes a changed copy): one is made per value of every
    reading, and a frozen dataclass takes six times as long to make.
    """

    device_id: str
    device_type: str | None
    place_path: tuple[str, ...]
    metric: str
    value: float
    ts: datetime
    confidence: float = 1.0
    profile_id: str | None = None
    tags: tuple[str, ...] = ()
    expected_interval_s: float | None = None
    """The device's expected reporting interval (its profile's), if known."""


def observations(
    item: Reading | CameraEvent,
    profile_id: str | None = None,
    tags: tuple[str, ...] = (),
    expected_interval_s: float | None = None,
) -> list[Observation]:
    """The observations of a reading (one per value) or of a camera event (one)."""
    if type(item) is Reading:  # not isinstance: a model's class check is an ABC's, slower
        device_id, confidence = item.device_id, 1.0
        pairs: Iterable[tuple[str, float]] = item.values.items()
    else:
        assert isinstance(item, CameraEvent)
        device_id, confidence = item.camera_id, item.confidence
        pairs = ((item.metric, item.value),)
    device_type, place_path, ts = item.device_type, item.place_path, item.ts
    interval = expected_interval_s
    # tuple.__new__ over the tuple's fields: half the cost of calling the class, once per value.
    return [
        _make(
            Observation,
            (device_id, device_type, place_path, m, v, ts, confidence, profile_id, tags, interval),
        )
        for m, v in pairs
    ]


_make = tuple.__new__
