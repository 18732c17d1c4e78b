"""``<root>/<device_id>/readings``: a sensor's JSON readings, ``{"ts", "seq", "values"}``."""

from __future__ import annotations

from datetime import datetime

from cityvitals.contracts import Reading, ReadingPayload
from ingest.protocols.base import DeviceProtocol, claimed_device, parse


def decode_reading(device_id: str, payload: bytes, received_at: datetime) -> Reading:
    """
    >>> from datetime import UTC
    >>> decode_reading("aq-1", b'{"ts": "2026-11-22T00:00:00Z", "seq": 7, "values": {"pm25": 41}}',
    ...                datetime(2026, 11, 22, tzinfo=UTC)).values
    {'pm25': 41.0}
    """
    r = parse(ReadingPayload, payload)
    claimed_device(r.device_id, device_id, "device_id")
    return Reading(
        device_id=device_id, ts=r.ts, seq=r.seq, values=r.values, received_at=received_at
    )


PROTOCOL = DeviceProtocol(
    decode_reading, b'{"ts": "2026-11-22T08:00:00Z", "seq": 1, "values": {"water_level_cm": 12}}'
)
