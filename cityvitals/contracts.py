"""Message contracts shared by every component.

Every message on a cityvitals Kafka topic is one of these frozen models, serialised as JSON.
Each carries ``schema_version`` so that consumers can refuse what they do not understand, and
every timestamp is timezone-aware UTC (a naive timestamp is rejected, any other offset is
converted to UTC).

>>> r = Reading(device_id="aq-001", ts="2026-11-22T08:00:00+08:00", seq=1, values={"pm25": 35.0})
>>> r.ts.isoformat()
'2026-11-22T00:00:00+00:00'
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "SCHEMA_VERSION",
    "Alert",
    "AlertResolution",
    "AlertStatus",
    "CameraEvent",
    "CameraEventPayload",
    "CameraEventType",
    "Contract",
    "DeadLetter",
    "Department",
    "Device",
    "DeviceLiveness",
    "DeviceState",
    "Indicator",
    "IndicatorBatch",
    "IndicatorQuality",
    "Liveness",
    "MembershipChange",
    "MetricSpec",
    "OutageStatus",
    "Place",
    "PlaceBatch",
    "PlaceLevel",
    "PlaceObservation",
    "PlaceOutage",
    "Profile",
    "Reading",
    "ReadingBatch",
    "ReadingPayload",
    "UtcDatetime",
    "ValidationError",
    "WarningLevel",
    "WindowPartial",
]

SCHEMA_VERSION: Literal[1] = 1

IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
"""Device, place and rule ids: safe inside an MQTT topic level, a Kafka key and a file name."""

METRIC = r"^[a-z][a-z0-9_.]{0,63}$"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamp must carry a timezone (e.g. 2026-11-22T08:00:00Z)")
    return value.astimezone(UTC)


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"value must be a finite number, got {value!r}")
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]
Identifier = Annotated[str, Field(pattern=IDENTIFIER)]
MetricName = Annotated[str, Field(pattern=METRIC)]
FiniteFloat = Annotated[float, AfterValidator(_finite)]


class Contract(BaseModel):
    """Base of every message: frozen, strict about unknown fields, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION


class PlaceLevel(StrEnum):
    """The five levels of the city's place tree, from the top."""

    CITY = "city"
    DISTRICT = "district"
    STREET = "street"
    GRID = "grid"
    BUILDING = "building"

    @property
    def depth(self) -> int:
        return list(PlaceLevel).index(self)


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
    min: float | None = None
    max: float | None = None

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


class Device(Contract):
    """A field sensor or camera, as published on the compacted ``devices`` topic."""

    device_id: Identifier
    device_type: Identifier
    profile_id: Identifier | None = None
    place_path: tuple[Identifier, ...] = Field(min_length=1, max_length=5)
    state: DeviceState = DeviceState.ACTIVE
    department: str | None = Field(default=None, max_length=100)
    tags: tuple[str, ...] = ()
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    valid_ranges: dict[MetricName, tuple[float | None, float | None]] = Field(default_factory=dict)
    """Physically valid (min, max) per metric, from the device's profile; the registry fills it
    when it publishes, so the stream can refuse impossible values without a lookup."""
    expected_interval_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    """The profile's expected reporting interval, when the publisher fills it: the rules judge
    a silent device's alerts stale after a number of these intervals."""
    updated_at: UtcDatetime


class Reading(Contract):
    """One report of a field sensor: one or more metric values taken at one instant.

    ``place_path`` and ``device_type`` are empty as the gateway forwards the reading and are
    filled by the stream processor from the device registry.
    """

    device_id: Identifier
    ts: UtcDatetime
    seq: int = Field(ge=0)
    values: dict[MetricName, FiniteFloat] = Field(min_length=1, max_length=64)
    received_at: UtcDatetime | None = None
    device_type: Identifier | None = None
    place_path: tuple[Identifier, ...] = ()


class CameraEventType(StrEnum):
    """What the video analytics on a camera detected. Never a face or a number plate."""

    CROWD_DENSITY = "crowd_density"
    SMOKE_FIRE = "smoke_fire"
    WATERLOGGING = "waterlogging"
    ILLEGAL_PARKING = "illegal_parking"
    TRAFFIC_ACCIDENT = "traffic_accident"
    ROAD_OBSTRUCTION = "road_obstruction"
    GARBAGE_OVERFLOW = "garbage_overflow"


SNAPSHOT_REF = r"^[A-Za-z0-9][A-Za-z0-9_./:-]{0,255}$"


class CameraEvent(Contract):
    """One detection by a camera's video analytics: a type, a value and a confidence.

    ``snapshot_ref`` points to an image kept elsewhere (object store key); the event itself
    never carries an image, a face or a number plate.
    """

    camera_id: Identifier
    ts: UtcDatetime
    seq: int = Field(ge=0)
    event_type: CameraEventType
    value: FiniteFloat
    confidence: float = Field(ge=0.0, le=1.0)
    snapshot_ref: Annotated[str, Field(pattern=SNAPSHOT_REF)] | None = None
    received_at: UtcDatetime | None = None
    device_type: Identifier | None = None
    place_path: tuple[Identifier, ...] = ()

    @property
    def device_id(self) -> str:
        return self.camera_id


class ReadingPayload(Contract):
    """What a sensor publishes on ``<root>/<device_id>/readings``; the topic names the device."""

    device_id: Identifier | None = None
    ts: UtcDatetime
    seq: int = Field(ge=0)
    values: dict[MetricName, FiniteFloat] = Field(min_length=1, max_length=64)


class CameraEventPayload(Contract):
    """What a camera publishes on ``<root>/<camera_id>/events``; the topic names the camera."""

    camera_id: Identifier | None = None
    ts: UtcDatetime
    seq: int = Field(ge=0)
    event_type: CameraEventType
    value: FiniteFloat
    confidence: float = Field(ge=0.0, le=1.0)
    snapshot_ref: Annotated[str, Field(pattern=SNAPSHOT_REF)] | None = None


class ReadingBatch(Contract):
    """Many readings and camera events of devices on one Kafka partition, in one message.

    Stages exchange batches because a stream processor's cost is per Kafka message: one
    message per reading would cap the pipeline at a few thousand readings a second.

    On ``readings.raw`` the registry also sends each device change in-band (``devices``), on
    the device's partition, before the device can publish; the stream applies it before the
    readings of the same batch, so every reading meets the registry as it was when it arrived.
    """

    devices: tuple[Device, ...] = ()
    readings: tuple[Reading, ...] = ()
    camera_events: tuple[CameraEvent, ...] = ()
    tick: UtcDatetime | None = None
    """A clock tick from the stream processor itself (no readings): rules that wait for
    silence (absence, windows) are judged at this time on the partition's devices."""

    def __len__(self) -> int:
        return len(self.readings) + len(self.camera_events)


class WarningLevel(StrEnum):
    """The four-level public warning scale, lowest first (blue IV ... red I)."""

    BLUE = "blue"
    YELLOW = "yellow"
    ORANGE = "orange"
    RED = "red"

    @property
    def rank(self) -> int:
        """1 for blue up to 4 for red."""
        return _WARNING_RANK[self]


_WARNING_RANK = {level: i for i, level in enumerate(WarningLevel, start=1)}


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class AlertResolution(StrEnum):
    """Why an episode ended."""

    CLEARED = "cleared"
    """The condition was false for ``keep_firing_for``."""
    STALE = "stale"
    """The device sent no value of the metric for the rule's ``stale_after`` intervals."""
    RETIRED = "retired"
    """The rule was removed, changed kind, or no longer applies to the device."""


class Alert(Contract):
    """A transition of one alert episode: it fired, changed level, or resolved.

    ``alert_id`` is the same for every transition of one episode and is derived from the rule,
    the device, the metric and the episode's start, so a replayed reading never makes a
    second alert. ``revision`` counts the transitions of the episode (0 = fired).
    """

    alert_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    revision: int = Field(ge=0)
    rule_id: Identifier
    status: AlertStatus
    level: WarningLevel
    device_id: Identifier
    metric: MetricName
    value: FiniteFloat
    threshold: FiniteFloat
    place_path: tuple[Identifier, ...] = ()
    device_type: Identifier | None = None
    started_at: UtcDatetime
    ts: UtcDatetime
    summary: str = Field(max_length=500)
    evidence: tuple[Identifier, ...] = ()
    """Composite rules: the devices whose readings make the condition hold."""
    peak_level: WarningLevel | None = None
    """The highest level of the episode so far; a resolved alert's ``level`` is this peak."""
    resolution: AlertResolution | None = None
    """Resolved alerts: why the episode ended."""


class PlaceObservation(Contract):
    """A reading's value that a composite rule judges together with other devices of a place.

    The stream sends it keyed and partitioned by the place at the rule's ``group_by`` level, so
    one worker holds all of one place's composite state.
    """

    rule_id: Identifier
    place_path: tuple[Identifier, ...] = Field(min_length=1)
    device_id: Identifier
    device_type: Identifier | None = None
    metric: MetricName
    value: FiniteFloat
    confidence: float = Field(default=1.0, ge=0.0, le=1.0)
    ts: UtcDatetime


class PlaceBatch(Contract):
    """Place observations of one partition, in one message; or a clock tick for its places."""

    observations: tuple[PlaceObservation, ...] = ()
    tick: UtcDatetime | None = None


class IndicatorQuality(StrEnum):
    """How far an indicator's value can be trusted, from its coverage."""

    GOOD = "good"
    PARTIAL = "partial"
    POOR = "poor"
    NO_DATA = "no_data"


class Indicator(Contract):
    """One vital sign of one place over one window: its value and how much it can be trusted.

    ``coverage`` is the share of the place's expected devices (active, of the indicator's
    device types, anywhere under the place) that reported in the window. ``value`` is None
    when none did. ``band`` names the value's category (an AQI level, a congestion level).
    """

    indicator: Identifier
    place_id: Identifier
    place_level: PlaceLevel
    place_path: tuple[Identifier, ...] = Field(min_length=1, max_length=5)
    window_start: UtcDatetime
    window_s: int = Field(gt=0)
    value: FiniteFloat | None
    band: str | None = None
    coverage: float = Field(ge=0.0, le=1.0)
    reporting: int = Field(ge=0)
    expected: int = Field(ge=0)
    quality: IndicatorQuality
    detail: dict[str, float | str] = {}
    computed_at: UtcDatetime
    samples: int = Field(default=0, ge=0)
    """Values folded into the window (0 for formulas without samples, e.g. devices online):
    with ``reporting``, how much data the value rests on. A report again carries at least
    as much; the sink never replaces a stored window with one of less."""


class WindowPartial(Contract):
    """Part of one indicator's window at one place, from one batch of one device partition:
    the formula's mergeable state (sums, counts, maxima) and how many devices it adds."""

    indicator: Identifier
    place_path: tuple[Identifier, ...] = Field(min_length=1, max_length=5)
    window_start: UtcDatetime
    state: dict[str, float]
    reporting: int = Field(ge=0)


class MembershipChange(Contract):
    """An active device of a type joined (+1) or left (-1) a place: expected devices."""

    place_path: tuple[Identifier, ...] = Field(min_length=1, max_length=5)
    device_type: Identifier
    delta: int


class IndicatorBatch(Contract):
    """What one input message of a device partition adds to the places' indicator windows,
    sent on the place's partition of ``indicators.partials``. ``source`` and ``offset`` name
    that input message, so a replay of it is applied once. Or a clock tick that closes windows."""

    source: str = ""
    offset: int = -1
    partials: tuple[WindowPartial, ...] = ()
    members: tuple[MembershipChange, ...] = ()
    tick: UtcDatetime | None = None


class Liveness(StrEnum):
    ONLINE = "online"
    LATE = "late"
    OFFLINE = "offline"


class DeviceLiveness(Contract):
    """A device's liveness changed, judged against its own observed reporting cadence."""

    device_id: Identifier
    status: Liveness
    last_seen: UtcDatetime | None
    expected_interval_s: float = Field(gt=0)
    """The cadence the judgement used: observed, else the profile's."""
    place_path: tuple[Identifier, ...] = ()
    ts: UtcDatetime


class OutageStatus(StrEnum):
    STARTED = "started"
    ENDED = "ended"


class PlaceOutage(Contract):
    """Most devices under one place went silent together: one problem, not one per device."""

    outage_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    place_id: Identifier
    place_path: tuple[Identifier, ...]
    status: OutageStatus
    devices_total: int = Field(ge=1)
    devices_silent: int = Field(ge=0)
    started_at: UtcDatetime
    ts: UtcDatetime


STAGE = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")


class DeadLetter(Contract):
    """An input that a stage refused, with the reason and the original bytes (base64)."""

    stage: Annotated[str, Field(pattern=STAGE.pattern)]
    reason: str = Field(min_length=1, max_length=2000)
    source: str = Field(max_length=500, description="MQTT topic or Kafka topic it came from")
    device_id: str | None = None
    payload_b64: str
    received_at: UtcDatetime
