"""The device protocols the gateway understands, by the last part of the MQTT topic.

A new protocol is one module here (a :class:`Decoder` function and a :class:`DeviceProtocol` naming it with a valid
example payload) and one line in
:data:`DECODERS`. ``tests/unit/test_decode.py`` checks every registered decoder.
"""

from ingest.protocols import events, readings
from ingest.protocols.base import Decoded, DecodeError, Decoder, DeviceProtocol, PackDecoder

__all__ = ["DECODERS", "DecodeError", "Decoded", "Decoder", "DeviceProtocol", "PackDecoder"]

DECODERS: dict[str, DeviceProtocol] = {
    "readings": readings.PROTOCOL,
    "events": events.PROTOCOL,
}
