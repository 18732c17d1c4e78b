"""``<root>/<camera_id>/events``: a camera's JSON detections (type, value, confidence)."""

from __future__ import annotations

from datetime import datetime

from cityvitals.contracts import CameraEvent, CameraEventPayload
from ingest.protocols.base import DeviceProtocol, claimed_device, parse


def decode_event(device_id: str, payload: bytes, received_at: datetime) -> CameraEvent:
    e = parse(CameraEventPayload, payload)
    claimed_device(e.camera_id, device_id, "camera_id")
    fields = e.model_dump(exclude={"camera_id"})
    return CameraEvent(camera_id=device_id, received_at=received_at, **fields)


PROTOCOL = DeviceProtocol(
    decode_event,
    b'{"ts": "2026-11-22T08:00:00Z", "seq": 1, "event_type": "waterlogging", "value": 0.7, '
    b'"confidence": 0.85}',
)
