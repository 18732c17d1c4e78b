"""The city's shape and what stands in it: places, departments, profiles and devices."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from cityvitals.contracts.base import Contract, FiniteFloat, Identifier, MetricName, UtcDatetime


class PlaceLevel(StrEnum):
    """The five levels of the city's place tree, from the top."""

    CITY = "city"
    DISTRICT = "district"
    STREET = "street"
    GRID = "grid"
    BUILDING = "building"

    @property
    def depth(self) -> int:
        """City 0, district 1, ... building 4 (asked per reading: a lookup, not a scan)."""
        return _DEPTHS[self]


_DEPTHS = {level: depth for depth, level in enumerate(PlaceLevel)}


class Place(Contract):
    """A node of the place tree. ``path`` lists the ids from the city down to this place."""

    place_id: Identifier
    level: PlaceLevel
    name: str = Field(min_length=1, max_length=200)
    path: tuple[Identifier, ...] = Field(min_length=1, max_length=5)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)

    @property
    def parent_id(self) -> str | None:
        return self.path[-2] if len(self.path) > 1 else None

    def model_post_init(self, _context: Any) -> None:
        if self.path[-1] != self.place_id:
            raise ValueError(f"path must end with the place's own id {self.place_id!r}")
        if len(self.path) != self.level.depth + 1:
            raise ValueError(
                f"a {self.level.value} sits at depth {self.level.depth + 1}, "
                f"but path has {len(self.path)} ids"
            )


class DeviceState(StrEnum):
    """Lifecycle of a device. Only an active or provisioned device's readings are processed;
    a provisioned device becomes active with its first valid reading."""

    PROVISIONED = "provisioned"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    RETIRED = "retired"


class MetricSpec(Contract):
    """One metric a device type reports: its unit and its physically valid range."""

    unit: str = Field(min_length=1, max_length=32)
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None

    def model_post_init(self, _context: Any) -> None:
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError(f"min {self.min} must be below max {self.max}")


class Profile(Contract):
    """What a kind of device reports and how often: the registry's template for devices."""

    profile_id: Identifier
    device_type: Identifier
    description: str = Field(default="", max_length=500)
    metrics: dict[MetricName, MetricSpec] = Field(default_factory=dict)
    expected_interval_s: float = Field(gt=0, le=7 * 24 * 3600)
    """How often a device of this profile reports; liveness falls back to it."""


class Department(Contract):
    """A department that owns categories of incidents and devices (water, traffic, ...)."""

    department_id: Identifier
    name: str = Field(min_length=1, max_length=200)


MAX_TAGS = 32
"""The tags a device holds at most."""


def _tag(value: str) -> str:
    """A tag as people write it: 1 to 64 characters, no ``;`` (the CSV import's separator of
    tags) and no control character."""
    if not 1 <= len(value) <= 64:
        raise ValueError(f"a tag is 1 to 64 characters, not {len(value)}")
    if ";" in value:
        raise ValueError(f"a tag holds no ';' (it separates tags in a CSV file): {value!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"a tag holds no control character: {value!r}")
    return value


Tag = Annotated[str, AfterValidator(_tag)]


class Device(Contract):
    """A field sensor or camera, as published on the compacted ``devices`` topic."""

    device_id: Identifier
    device_type: Identifier
    profile_id: Identifier | None = None
    place_path: tuple[Identifier, ...] = Field(min_length=1, max_length=5)
    state: DeviceState = DeviceState.ACTIVE
    department: str | None = Field(default=None, max_length=100)
    tags: tuple[Tag, ...] = Field(default=(), max_length=MAX_TAGS)
    """Free labels to find devices by (``underpass``, ``river``): each 1 to 64 characters, no
    ``;`` (the CSV import's separator) nor control character, :data:`MAX_TAGS` at most. A
    device is one message on Kafka: a megabyte of tags once made it too large to publish."""
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    valid_ranges: dict[MetricName, tuple[float | None, float | None]] = Field(default_factory=dict)
    """Physically valid (min, max) per metric, from the device's profile; the registry fills it
    when it publishes, so the stream can refuse impossible values without a lookup, and when it
    shows a device."""
    expected_interval_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    """The profile's expected reporting interval, when the publisher fills it: the rules judge
    a silent device's alerts stale after a number of these intervals."""
    updated_at: UtcDatetime
