"""What devices report: readings, camera events, their payloads and the batches stages exchange."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import orjson
from pydantic import ConfigDict, Field, RootModel

from cityvitals.contracts.base import (
    Contract,
    FiniteFloat,
    Identifier,
    Instant,
    MeasuredFloat,
    MetricName,
    Seq,
    UtcDatetime,
)
from cityvitals.contracts.places import Device
from cityvitals.contracts.trust import written_fields


class Reading(Contract):
    """One report of a field sensor: one or more metric values taken at one instant.

    ``place_path`` and ``device_type`` are empty as the gateway forwards the reading and are
    filled by the stream processor from the device registry.
    """

    device_id: Identifier
    ts: Instant
    seq: Seq
    values: dict[MetricName, FiniteFloat] = Field(min_length=1, max_length=64)
    received_at: Instant | None = None
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
    ts: Instant
    seq: Seq
    event_type: CameraEventType
    value: FiniteFloat
    confidence: float = Field(ge=0.0, le=1.0)
    snapshot_ref: Annotated[str, Field(pattern=SNAPSHOT_REF)] | None = None
    received_at: Instant | None = None
    device_type: Identifier | None = None
    place_path: tuple[Identifier, ...] = ()

    @property
    def device_id(self) -> str:
        return self.camera_id

    @property
    def metric(self) -> str:
        """The metric the event is to rules, profiles and indicators: ``camera.<event type>``."""
        return f"camera.{self.event_type.value}"


class ReadingPayload(Contract):
    """What a sensor publishes on ``<root>/<device_id>/readings``; the topic names the device."""

    device_id: Identifier | None = None
    ts: UtcDatetime
    seq: Seq
    """The device's sequence number, an integer written without a fraction: ``3.0`` is
    refused (a payload is read strictly, as its types say; JSON Schema counts ``3.0`` as an
    integer)."""
    values: dict[MetricName, MeasuredFloat] = Field(min_length=1, max_length=64)


MAX_PACK = 500
"""Readings in one pack at most."""


class ReadingPack(
    RootModel[Annotated[list[ReadingPayload], Field(min_length=1, max_length=MAX_PACK)]]
):
    """Many readings in one message on ``<root>/<device_id>/readings``, as a JSON array: a
    device that buffers its readings, or a field gateway forwarding a device's backlog."""

    model_config = ConfigDict(frozen=True)


class CameraEventPayload(Contract):
    """What a camera publishes on ``<root>/<camera_id>/events``; the topic names the camera."""

    camera_id: Identifier | None = None
    ts: UtcDatetime
    seq: Seq
    """The camera's sequence number, an integer written without a fraction (``3.0`` is
    refused, as for a reading)."""
    event_type: CameraEventType
    value: MeasuredFloat
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
    heartbeat: UtcDatetime | None = Field(default=None, exclude_if=lambda at: at is None)
    """The gateway's heartbeat (no items): at this time it ran and took its MQTT connection
    to be up (a connection lost without a word is seen within 1.5 keepalives, 45 s). The
    gateway sends one to every partition of ``readings.raw`` every
    ``ingest_heartbeat_s``, the stream stage passes it on to the same partition of
    ``readings``, and the liveness service takes a partition where they stop as the intake's
    stall (the gateway hung or cut off from the broker, or the stream stage), not as its
    devices' silence. Left out of the message when there is none."""

    def __len__(self) -> int:
        return len(self.readings) + len(self.camera_events)

    def to_json(self) -> bytes:
        """``model_dump_json().encode()``: the same bytes, made by orjson from the items' fields
        in about 40 % of the time (0.6 against 1.5 µs a reading) for a batch of readings and
        camera events alone, as the gateway and the stream stage send them at every reading.
        The items are valid already (validated, or made of validated parts: a float field
        made of an int would be written ``4``, not ``4.0``), so their fields are written as
        they are. A batch with devices, a tick or a heartbeat, an item whose fields orjson
        would not write as pydantic does (:func:`~cityvitals.contracts.trust.written_fields`),
        or a value it cannot write (an integer beyond 64 bits) goes through pydantic."""
        readings = written_fields(self.readings, _INSTANTS)
        events = written_fields(self.camera_events, _INSTANTS)
        if self.devices or self.tick or self.heartbeat or readings is None or events is None:
            return self.model_dump_json().encode()
        document = {
            "schema_version": self.schema_version,
            "devices": [],
            "readings": readings,
            "camera_events": events,
            "tick": None,
        }
        try:
            return orjson.dumps(document, option=orjson.OPT_UTC_Z)
        except orjson.JSONEncodeError:
            return self.model_dump_json().encode()


_INSTANTS = ("ts", "received_at")
"""The instants of a reading and of a camera event."""
