"""``<root>/<device_id>/readings``: a sensor's JSON readings, ``{"ts", "seq", "values"}``, one
per message or many as a JSON array (a pack: a device that buffers its readings, or a field
gateway forwarding a device's backlog, sends them in one message)."""

from __future__ import annotations

from datetime import datetime

from cityvitals.contracts import SCHEMA_VERSION, Reading, ReadingPack, ReadingPayload, trusted
from ingest.protocols.base import Decoded, DecodeError, DeviceProtocol, claimed_device, parse

__all__ = ["PROTOCOL", "decode_pack", "decode_reading"]


def _reading(r: ReadingPayload, device_id: str, received_at: datetime, field: str) -> Reading:
    """The payload's reading. Its fields were validated with the payload, the device id with
    the topic and ``received_at`` is the gateway's clock: not validated again."""
    claimed_device(r.device_id, device_id, field)
    fields = {
        "schema_version": SCHEMA_VERSION,
        "device_id": device_id,
        "ts": r.ts,
        "seq": r.seq,
        "values": r.values,
        "received_at": received_at,
        "device_type": None,
        "place_path": (),
    }
    return trusted(Reading, fields)


def decode_reading(device_id: str, payload: bytes, received_at: datetime) -> Reading:
    """
    >>> from datetime import UTC
    >>> decode_reading("aq-1", b'{"ts": "2026-11-22T00:00:00Z", "seq": 7, "values": {"pm25": 41}}',
    ...                datetime(2026, 11, 22, tzinfo=UTC)).values
    {'pm25': 41.0}
    """
    try:
        found = parse(ReadingPayload, payload)
    except DecodeError as exc:
        if b'"event_type"' in payload:  # a camera's event, on the readings' topic
            raise DecodeError(
                f"{exc.reason} (this looks like a camera event: those go on the topic ending "
                "/events)",
                exc.field,
            ) from None
        raise
    return _reading(found, device_id, received_at, "device_id")


def decode_pack(device_id: str, payload: bytes, received_at: datetime) -> list[Decoded]:
    """A pack's readings, in its order; one bad element refuses the pack (it is kept whole
    in the dead letter, the reason naming the element).

    >>> from datetime import UTC
    >>> decode_pack("aq-1", b'[{"ts": "2026-11-22T00:00:00Z", "seq": 7, "values": {"pm25": 41}},'
    ...             b' {"ts": "2026-11-22T00:01:00Z", "values": {"pm25": 40}}]',
    ...             datetime(2026, 11, 22, tzinfo=UTC))
    Traceback (most recent call last):
    ...
    ingest.protocols.base.DecodeError: [1].seq: Field required
    """
    pack = parse(ReadingPack, payload).root
    return [_reading(r, device_id, received_at, f"[{i}].device_id") for i, r in enumerate(pack)]


PROTOCOL = DeviceProtocol(
    decode_reading,
    b'{"ts": "2026-11-22T08:00:00Z", "seq": 1, "values": {"water_level_cm": 12}}',
    pack=decode_pack,
)
