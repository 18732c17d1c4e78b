"""Device payloads to contracts. Pure: bytes and topic in, a contract or a :class:`DecodeError` out.

The topic ``<root>/<device_id>/<protocol>`` names the device and picks the decoder from
:data:`ingest.protocols.DECODERS`.

>>> from datetime import datetime, UTC
>>> now = datetime(2026, 11, 22, tzinfo=UTC)
>>> decode("cityvitals", "cityvitals/aq-1/readings",
...        b'{"ts": "2026-11-22T00:00:00Z", "seq": 7, "values": {"pm25": 41}}', now).values
{'pm25': 41.0}
>>> decode("cityvitals", "cityvitals/aq-1/readings", b'{"seq": 7}', now)
Traceback (most recent call last):
...
ingest.protocols.base.DecodeError: ts: Field required; also values: Field required
"""

from __future__ import annotations

import re
from datetime import datetime

from cityvitals.contracts import IDENTIFIER
from ingest.protocols import DECODERS, Decoded, DecodeError

__all__ = ["DecodeError", "decode", "decode_message", "device_of_topic", "publisher_of_topic"]

MAX_PAYLOAD = 64 * 1024
_DEVICE = re.compile(IDENTIFIER)


def device_of_topic(topic_root: str, topic: str) -> tuple[str, str]:
    """``<root>/<device_id>/<protocol>`` to ``(device_id, protocol)``; raises DecodeError otherwise.

    >>> device_of_topic("cityvitals", "cityvitals/wl-1/reading")
    Traceback (most recent call last):
    ...
    ingest.protocols.base.DecodeError: topic: topic 'cityvitals/wl-1/reading' is neither cityvitals/<device_id>/readings nor cityvitals/<device_id>/events
    """
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != topic_root or parts[2] not in DECODERS:
        forms = " nor ".join(f"{topic_root}/<device_id>/{kind}" for kind in DECODERS)
        raise DecodeError(f"topic {topic!r} is neither {forms}", "topic")
    if not _DEVICE.fullmatch(parts[1]):
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
    if len(parts) >= 2 and parts[0] == topic_root and _DEVICE.fullmatch(parts[1]):
        return parts[1]
    return None


def decode(topic_root: str, topic: str, payload: bytes, received_at: datetime) -> Decoded:
    """Decode one MQTT message of one item with the decoder its topic names."""
    device_id, protocol = device_of_topic(topic_root, topic)
    return DECODERS[protocol].decode(device_id, _checked(payload), received_at)


def decode_message(
    topic_root: str, topic: str, payload: bytes, received_at: datetime
) -> list[Decoded]:
    """Decode one MQTT message: one item, or a pack (a JSON array) where the topic's protocol
    takes packs. A pack is refused whole when one of its items is bad.

    >>> from datetime import UTC
    >>> pack = (b'[{"ts": "2026-11-22T00:00:00Z", "seq": 1, "values": {"pm25": 41}},'
    ...         b' {"ts": "2026-11-22T00:01:00Z", "seq": 2, "values": {"pm25": 40}}]')
    >>> [r.seq for r in decode_message("cityvitals", "cityvitals/aq-1/readings", pack,
    ...                                datetime(2026, 11, 22, tzinfo=UTC))]
    [1, 2]
    """
    device_id, protocol = device_of_topic(topic_root, topic)
    payload = _checked(payload)
    chosen = DECODERS[protocol]
    if chosen.pack is not None and payload.lstrip()[:1] == b"[":
        return chosen.pack(device_id, payload, received_at)
    return [chosen.decode(device_id, payload, received_at)]


BOM = b"\xef\xbb\xbf"
"""UTF-8's byte-order mark."""


def _checked(payload: bytes) -> bytes:
    """The payload within :data:`MAX_PAYLOAD`, without a byte-order mark (some firmware
    writes its UTF-8 with one; JSON's RFC 8259 lets a reader skip it)."""
    if len(payload) > MAX_PAYLOAD:
        raise DecodeError(
            f"{len(payload):,} bytes, past the {MAX_PAYLOAD:,} a message may hold", "payload"
        )
    return payload[3:] if payload[:3] == BOM else payload
