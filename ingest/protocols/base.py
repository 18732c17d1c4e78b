"""The payload decoder interface: one per device protocol (the last part of the MQTT topic).

A decoder takes the payload's bytes, the device the topic names and when it arrived, and
returns a contract (:class:`Reading` or :class:`CameraEvent`) or raises :class:`DecodeError`
naming the field that is wrong. Never another exception: the gateway dead-letters a
DecodeError and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from cityvitals.contracts import CameraEvent, Reading
from cityvitals.problems import problems

__all__ = [
    "DecodeError",
    "Decoded",
    "Decoder",
    "DeviceProtocol",
    "PackDecoder",
    "claimed_device",
    "parse",
]

Decoded = Reading | CameraEvent
M = TypeVar("M", bound=BaseModel)


class DecodeError(ValueError):
    """A payload that is not a valid reading or camera event. ``field`` names what is wrong."""

    def __init__(self, reason: str, field: str = "") -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


class Decoder(Protocol):
    """``decode(device_id, payload, received_at)`` → a contract, or :class:`DecodeError`."""

    def __call__(self, device_id: str, payload: bytes, received_at: datetime) -> Decoded: ...


class PackDecoder(Protocol):
    """``decode(device_id, payload, received_at)`` → the contracts of a pack (a JSON array),
    or :class:`DecodeError` naming the element and field at fault."""

    def __call__(self, device_id: str, payload: bytes, received_at: datetime) -> list[Decoded]: ...


@dataclass(frozen=True, slots=True)
class DeviceProtocol:
    """A registered protocol: its decoder and a valid payload of it (for tests and docs).

    ``pack``: the protocol also takes many items in one message, as a JSON array (a device
    that buffers its readings, or a field gateway forwarding a device's backlog)."""

    decode: Decoder
    example: bytes
    pack: PackDecoder | None = None


def parse(model: type[M], payload: bytes) -> M:
    """``model`` validated from JSON bytes; its problems as a :class:`DecodeError` that names
    the first one's field, and says up to :data:`~cityvitals.problems.PROBLEMS_SAID` of them (a device's developer fixes
    them in one round, not one a message).

    Strictly, as the payload's JSON schema says, never coerced: a value ``true`` or
    ``"7.5"``, a ``seq`` of ``"2"`` or ``3.0``, a ``ts`` as a number are refused (a firmware
    that sends them is broken, and its ones and zeros would feed alerts).

    >>> from cityvitals.contracts import ReadingPayload
    >>> parse(ReadingPayload, b'{"seq": 1, "values": {"pm25": 41}}')
    Traceback (most recent call last):
    ...
    ingest.protocols.base.DecodeError: ts: Field required
    >>> parse(ReadingPayload, b'{"ts": "2026-11-22T08:00:00Z", "seq": 1, "values": {"on": true}}')
    Traceback (most recent call last):
    ...
    ingest.protocols.base.DecodeError: values.on: Input should be a valid number (got True)
    >>> parse(ReadingPayload, b'{"ts": "2026-11-22T08:00:00Z", "values": {"cm": "18"}}')
    Traceback (most recent call last):
    ...
    ingest.protocols.base.DecodeError: seq: Field required; also values.cm: Input should be a valid number (got '18')
    """
    try:
        return model.model_validate_json(payload, strict=True)
    except ValidationError as exc:
        field, detail = problems(exc)
    raise DecodeError(detail, field)


def claimed_device(claimed: str | None, device_id: str, field: str) -> None:
    """A device id the payload names itself must be the topic's."""
    if claimed is not None and claimed != device_id:
        raise DecodeError(f"{claimed!r} does not match the topic's device {device_id!r}", field)
