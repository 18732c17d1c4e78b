"""Conformance of every registered device protocol's decoder (ingest.protocols.DECODERS)."""

from datetime import UTC, datetime

import pytest

from cityvitals.contracts import CameraEvent, Reading
from ingest import decode
from ingest.protocols import DECODERS, DecodeError, DeviceProtocol

NOW = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
KINDS = sorted(DECODERS)

MALFORMED = [
    (b"", "payload"),
    (b"{not json", "payload"),
    (b"\xff\xfe\x00", "payload"),
    (b"[]", "payload"),
    (b'"a string"', "payload"),
    (b"null", "payload"),
    (b"{}", ""),
    (b'{"ts": "yesterday", "seq": -1}', ""),
]


@pytest.mark.parametrize("kind", KINDS)
def test_the_example_decodes_to_a_contract_of_the_topics_device(kind: str) -> None:
    protocol = DECODERS[kind]
    item = protocol.decode("dev-1", protocol.example, NOW)
    assert isinstance(item, Reading | CameraEvent)
    assert (item.device_id, item.received_at) == ("dev-1", NOW)
    assert decode("cityvitals", f"cityvitals/dev-1/{kind}", protocol.example, NOW) == item


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("payload", "field"), MALFORMED)
def test_malformed_bytes_raise_a_decode_error_naming_the_problem(
    kind: str, payload: bytes, field: str
) -> None:
    with pytest.raises(DecodeError) as err:
        DECODERS[kind].decode("dev-1", payload, NOW)
    assert err.value.field and err.value.reason
    assert str(err.value).startswith(f"{err.value.field}: ")
    if field:
        assert err.value.field == field


@pytest.mark.parametrize("kind", KINDS)
def test_a_payload_naming_another_device_is_refused(kind: str) -> None:
    protocol = DECODERS[kind]
    item = protocol.decode("dev-1", protocol.example, NOW)
    with pytest.raises(DecodeError, match="does not match the topic's device 'dev-2'"):
        protocol.decode("dev-2", _claiming(protocol, item.device_id), NOW)


@pytest.mark.parametrize("kind", KINDS)
def test_every_byte_cut_of_the_example_is_a_decode_error_or_a_contract(kind: str) -> None:
    protocol = DECODERS[kind]
    for end in range(len(protocol.example)):
        try:
            protocol.decode("dev-1", protocol.example[:end], NOW)
        except DecodeError:
            continue


def _claiming(protocol: DeviceProtocol, device_id: str) -> bytes:
    """The example with the device id field it may carry set to ``device_id``."""
    for field in ("device_id", "camera_id"):
        candidate = protocol.example[:-1] + f', "{field}": "{device_id}"}}'.encode()
        try:
            protocol.decode(device_id, candidate, NOW)
        except DecodeError:
            continue
        return candidate
    raise AssertionError("the example names no device field")
