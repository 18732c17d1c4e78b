"""Device payloads to contracts. Pure: bytes and topic in, a contract or a :class:`DecodeError` out.

>>> from datetime import datetime, UTC
>>> now = datetime(2026, 11, 22, tzinfo=UTC)
>>> decode("cityvitals", "cityvitals/aq-1/readings",
...        b'{"ts": "2026-11-22T00:00:00Z", "seq": 7, "values": {"pm25": 41}}', now).values
{'pm25': 41.0}
>>> decode("cityvitals", "cityvitals/aq-1/readings", b'{"seq": 7}', now)
Traceback (most recent call last):
...
ingest.decode.DecodeError: ts: Field required
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import ValidationError

from cityvitals.contracts import (
    IDENTIFIER,
    CameraEvent,
    CameraEventPayload,
    Reading,
    ReadingPayload,
)

__all__ = ["DecodeError", "decode", "device_of_topic", "publisher_of_topic"]

MAX_PAYLOAD = 64 * 1024
_DEVICE = re.compile(IDENTIFIER)


class DecodeError(ValueError):
    """A payload that is not a valid reading or camera event. ``field`` names what is wrong."""

    def __init__(self, reason: str, field: str = "") -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


def device_of_topic(topic_root: str, topic: str) -> tuple[str, str]:
    """``<root>/<device_id>/<kind>`` to ``(device_id, kind)``; raises DecodeError otherwise.

    >>> device_of_topic("cityvitals", "cityvitals/wl-1/reading")
    Traceback (most recent call last):
    ...
    ingest.decode.DecodeError: topic: topic 'cityvitals/wl-1/reading' is neither cityvitals/<device_id>/readings nor cityvitals/<device_id>/events
    """
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != topic_root or parts[2] not in ("readings", "events"):
        raise DecodeError(
            f"topic {topic!r} is neither {topic_root}/<device_id>/readings nor "
            f"{topic_root}/<device_id>/events",
            "topic",
        )
    if not _DEVICE.match(parts[1]):
        raise DecodeError(f"{parts[1]!r} is not a valid device id", "topic")
    return parts[1], parts[2]


def publisher_of_topic(topic_root: str, topic: str) -> str | None:
    """The device a topic under ``<root>/<device_id>/`` belongs to, whatever follows; None
    when the topic names none. The broker lets a device write only under its own id, so this
    names the sender of a message on a mistyped topic.

    >>> publisher_of_topic("cityvitals", "cityvitals/wl-1/reading"), publisher_of_topic("cityvitals", "x")
    ('wl-1', None)
    """
    parts = topic.split("/")
    if len(parts) >= 2 and parts[0] == topic_root and _DEVICE.match(parts[1]):
        return parts[1]
    return None


def _first_error(exc: ValidationError) -> DecodeError:
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err["loc"])
    if err["type"] in ("json_invalid", "json_type"):
        return DecodeError(f"not valid JSON ({err['msg']})", "payload")
    got = err.get("input")
    detail = err["msg"]
    if err["type"] != "missing" and not isinstance(got, dict):
        detail = f"{detail} (got {got!r:.80})"
    return DecodeError(detail, field or "payload")


def decode(
    topic_root: str, topic: str, payload: bytes, received_at: datetime
) -> Reading | CameraEvent:
    """Decode one MQTT message into a :class:`Reading` or a :class:`CameraEvent`."""
    device_id, kind = device_of_topic(topic_root, topic)
    if len(payload) > MAX_PAYLOAD:
        raise DecodeError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}", "payload")
    try:
        if kind == "readings":
            r = ReadingPayload.model_validate_json(payload)
            claimed = r.device_id
            item: Reading | CameraEvent = Reading(
                device_id=device_id, ts=r.ts, seq=r.seq, values=r.values, received_at=received_at
            )
        else:
            e = CameraEventPayload.model_validate_json(payload)
            claimed = e.camera_id
            item = CameraEvent(
                camera_id=device_id,
                ts=e.ts,
                seq=e.seq,
                event_type=e.event_type,
                value=e.value,
                confidence=e.confidence,
                snapshot_ref=e.snapshot_ref,
                received_at=received_at,
            )
    except ValidationError as exc:
        raise _first_error(exc) from None
    if claimed is not None and claimed != device_id:
        field = "device_id" if kind == "readings" else "camera_id"
        raise DecodeError(f"{claimed!r} does not match the topic's device {device_id!r}", field)
    return item
